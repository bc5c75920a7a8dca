"""`vla-ros demo` closing the loop through each policy-server protocol, the built-in VLA served over loopback.

The served policy samples with the seed the client asks for (GR00T's reset) or the one it started with
(OpenVLA has no episodes), and the latency is not charged (--no-measured-latency), so each run is reproducible.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("vla_ros.sim.world", reason="the demo needs the 'sim' extra (mujoco)")  # sets MUJOCO_GL first
pytest.importorskip("torch", reason="the built-in VLA needs the 'policies' extra")
pytest.importorskip("zmq", reason="the GR00T protocol needs the 'remote' extra (pyzmq)")

from vla_ros.cli.main import main  # noqa: E402
from vla_ros.core.embodiment import load_embodiment  # noqa: E402
from vla_ros.policies.factory import make_policy  # noqa: E402
from vla_ros.policies.remote.gr00t_server import Gr00tServer  # noqa: E402
from vla_ros.policies.remote.openvla_server import OpenVlaServer  # noqa: E402
from vla_ros.policies.remote.server import ServeConfig  # noqa: E402
from vla_ros.policies.remote.service import BackgroundServer  # noqa: E402

EPISODE = ["--robot", "so101", "--task", "touch", "--episodes", "1", "--seed", "0", "--no-measured-latency",
           "--video-episodes", "0", "--no-progress"]


def demo(policy: str, tmp_path, name: str) -> dict:
    path = tmp_path / f"{name}.json"
    assert main(["demo", "--policy", policy, *EPISODE, "--json", str(path), "--out", str(tmp_path)]) == 0
    return json.loads(path.read_text())


def test_demo_through_gr00t_matches_the_local_policy(tmp_path):
    so101 = load_embodiment("so101")
    with BackgroundServer(Gr00tServer(make_policy("builtin", embodiment=so101), ServeConfig(port=0),
                                      embodiment=so101)) as server:
        remote = demo(server.url, tmp_path, "gr00t")
    local = demo("builtin", tmp_path, "local")
    assert remote["policy"] == "gr00t" and remote["policy_errors"] == {}
    assert remote["episodes"] == local["episodes"]  # same seed, same chunks: the same episode, step for step
    assert remote["success_rate"] == 1.0


@pytest.mark.parametrize("chunked", [False, True], ids=["openvla", "oft"])
def test_demo_through_openvla_end_effector_actions(tmp_path, chunked):
    so101 = load_embodiment("so101")
    policy = make_policy("builtin", embodiment=so101)
    policy.reset(seed=0)
    with BackgroundServer(OpenVlaServer(policy, ServeConfig(port=0), embodiment=so101, chunked=chunked)) as server:
        results = demo(server.url, tmp_path, "openvla")
    assert results["policy"] == "openvla" and results["policy_errors"] == {}
    assert results["success_rate"] == 1.0, results["episodes"]
