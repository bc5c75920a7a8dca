"""OpenVLA's HTTP protocol: `vla-ros serve --protocol openvla` and the openvla+http:// client, over loopback.

The server is real (HTTP on 127.0.0.1); http.client stands in for OpenVLA's own `requests` client where the
exact bytes matter. The end-effector mapping uses the simulator's arms and their inverse kinematics.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading

import numpy as np
import pytest
import yaml

pytest.importorskip("vla_ros.sim.ik", reason="end-effector actions use the simulator's kinematics (the 'sim' extra)")

from test_remote_policy import SmoothPolicy, expected_actions, features  # noqa: E402

from vla_ros.core.adapter import EmbodimentAdapter  # noqa: E402
from vla_ros.core.embodiment import embodiment_from_dict, load_embodiment  # noqa: E402
from vla_ros.core.errors import ConfigError, PolicyError  # noqa: E402
from vla_ros.core.features import STATE  # noqa: E402
from vla_ros.policies.checks import check_policy  # noqa: E402
from vla_ros.policies.factory import PolicyOptions, make_policy  # noqa: E402
from vla_ros.policies.remote import openvla_protocol as wire  # noqa: E402
from vla_ros.policies.remote.batching import BatchConfig  # noqa: E402
from vla_ros.policies.remote.client import RemoteConfig  # noqa: E402
from vla_ros.policies.remote.openvla_client import OpenVlaRemotePolicy  # noqa: E402
from vla_ros.policies.remote.openvla_server import OpenVlaServer  # noqa: E402
from vla_ros.policies.remote.server import ServeConfig  # noqa: E402
from vla_ros.policies.remote.service import BackgroundServer  # noqa: E402


def robot(name: str = "so101", **openvla) -> object:
    """The robot's YAML with its `policy_servers.openvla` replaced by `openvla` (None: removed)."""
    path = load_embodiment(name).source
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if openvla.get("remove"):
        data.pop("policy_servers")
    else:
        data["policy_servers"]["openvla"] |= openvla
    return embodiment_from_dict(data, source=path)


def serve(policy, embodiment, *, chunked=False, **config) -> BackgroundServer:
    return BackgroundServer(OpenVlaServer(policy, ServeConfig(**({"port": 0} | config)), embodiment=embodiment,
                                          chunked=chunked)).start()


def smooth(embodiment, **overrides) -> SmoothPolicy:
    return SmoothPolicy(features(action_dt_s=embodiment.control_period_s, image_size=(32, 32), **overrides))


def post(url: str, body, *, headers=None) -> tuple[int, object]:
    """POST /act as OpenVLA's client does (json_numpy body); (status, decoded reply)."""
    host, port = url.split("//")[1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        data = body if isinstance(body, bytes) else wire.dumps(body).encode()
        connection.request("POST", "/act", body=data, headers={"Content-Type": "application/json"} | (headers or {}))
        response = connection.getresponse()
        return response.status, wire.loads(response.read())
    finally:
        connection.close()


def request(embodiment, *, state=None, size=(224, 224), instruction="touch the red cube") -> dict:
    rng = np.random.default_rng(0)
    n = len(embodiment.joints)
    return {"image": rng.integers(0, 256, (*size, 3), dtype=np.uint8),
            "wrist_image": rng.integers(0, 256, (*size, 3), dtype=np.uint8),
            "state": np.linspace(-0.5, 0.5, n).astype(np.float32) if state is None else state,
            "instruction": instruction}


# -- codec and mapping ------------------------------------------------------------------------------------------------


def test_codec_is_json_numpys_format():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    encoded = json.loads(wire.dumps({"a": array, "s": np.float32(1.5)}))
    assert encoded["a"] == {"__numpy__": base64.b64encode(array.tobytes()).decode(), "dtype": "<f4", "shape": [2, 3]}
    decoded = wire.loads(json.dumps(encoded))
    np.testing.assert_array_equal(decoded["a"], array)
    assert decoded["s"] == 1.5 and isinstance(decoded["s"], np.float32)  # json_numpy: shape [] is a scalar
    fortran = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(wire.loads(wire.dumps(fortran)), fortran)


@pytest.mark.parametrize("fields, error", [
    ({"dtype": "|O"}, "refusing to receive an array of dtype '\\|O'"),
    ({"shape": [3]}, "needs 12 bytes, got 8"),
    ({"__numpy__": "not base64!"}, "not base64"),
    ({"shape": "2"}, "shape must be a list"),
])
def test_codec_refuses_bad_arrays(fields, error):
    array = {"__numpy__": base64.b64encode(b"\0" * 8).decode(), "dtype": "<f4", "shape": [2]} | fields
    with pytest.raises(PolicyError, match=error):
        wire.loads(json.dumps({"x": array}))


def test_end_effector_deltas_round_trip():
    mapping = wire.mapping_from_config(load_embodiment("so101"))
    rotation = wire.rpy_matrix(0.3, -0.4, 1.2)
    np.testing.assert_allclose(wire.matrix_rpy(rotation), [0.3, -0.4, 1.2], atol=1e-12)
    position = np.array([0.2, 0.0, 0.1])
    delta = np.array([0.01, -0.02, 0.005, 0.05, -0.03, 0.02])
    new_position, new_rotation = wire.apply_delta(position, rotation, delta, mapping)
    np.testing.assert_allclose(wire.pose_delta(position, rotation, new_position, new_rotation, mapping), delta,
                               atol=1e-12)


def test_robots_without_a_mapping_are_refused_naming_what_is_missing():
    with pytest.raises(ConfigError, match="so101.yaml.*policy_servers.openvla.*has no OpenVLA mapping.*action_space"):
        make_policy("openvla+http://127.0.0.1:1", embodiment=robot(remove=True))
    with pytest.raises(ConfigError, match="policy_servers.openvla.end_effector.*no end-effector kinematics"):
        make_policy("openvla+http://127.0.0.1:1", embodiment=robot(end_effector=None))
    with pytest.raises(ConfigError, match="policy_servers.openvla.action_space.*ee_delta"):
        wire.mapping_from_config(robot(action_space="ee"))


# -- server and client ------------------------------------------------------------------------------------------------


def test_joint_actions_arrive_exactly_in_both_reply_styles():
    so101 = robot(action_space="joints", step_s=2 / 30)
    policy = smooth(so101)
    for chunked in (False, True):
        with serve(policy, so101, chunked=chunked) as server:
            remote = make_policy(server.url, embodiment=so101)
            try:
                check_policy(remote, so101, instruction="touch the red cube")
                horizon = remote.metadata.features.chunk_size
                assert horizon == (5 if chunked else 2) and remote.metadata.features.action_dt_s == 2 / 30
                adapter = EmbodimentAdapter(so101, remote.metadata.features)
                batch, state = adapter.to_policy_observation(so101.example_observation(seed=2, instruction="go"))
                chunk = remote.predict_chunk(batch)
                expected = expected_actions(policy, np.pad(batch[STATE], (0, 2)))[2::2][:horizon - 1, :6]
                np.testing.assert_allclose(chunk[1:], expected, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(adapter.actions_to_robot(chunk, state)[0], state, atol=1e-9)
                assert policy.tasks[-1] == "go"
            finally:
                remote.close()


@pytest.mark.parametrize("name", ["so101", "panda"])
def test_end_effector_actions_reach_the_policys_tool_poses(name):
    """The server turns joint chunks into tool moves (FK), the client back into joints (IK): same tool poses."""
    embodiment = robot(name)
    policy = smooth(embodiment, state_dim=8, action_dim=8)
    policy.goal = EmbodimentAdapter(embodiment, policy.metadata.features).state_to_policy(
        embodiment.home + 0.15 * (embodiment.upper_limits - embodiment.home)).astype(np.float32)
    with serve(policy, embodiment, chunked=True) as server:
        remote = make_policy(server.url, embodiment=embodiment)
        try:
            adapter = EmbodimentAdapter(embodiment, remote.metadata.features)
            observation = embodiment.example_observation(seed=1)
            observation = type(observation)(stamp=0.0, joint_names=embodiment.joint_names,
                                            joint_positions=embodiment.home + 0.05, images=observation.images)
            batch, state = adapter.to_policy_observation(observation)
            targets = adapter.actions_to_robot(remote.predict_chunk(batch), state)
            served = EmbodimentAdapter(embodiment, policy.metadata.features)
            stride = round(remote.mapping.step_s / embodiment.control_period_s)
            reference = served.actions_to_robot(expected_actions(policy, served.state_to_policy(state)),
                                                state)[stride::stride]
            kinematics = remote.converter.kinematics
            for got, want in zip(targets[1:], reference, strict=True):
                np.testing.assert_allclose(kinematics.forward(got)[0], kinematics.forward(want)[0], atol=1e-4)
                np.testing.assert_allclose(kinematics.forward(got)[1], kinematics.forward(want)[1], atol=1e-3)
                assert got[kinematics.gripper_index] == pytest.approx(want[kinematics.gripper_index], abs=1e-5)
            assert kinematics.misses == 0
        finally:
            remote.close()


@pytest.mark.parametrize("body, status, error", [
    (b"{not json", 400, "not JSON"),
    ([1, 2], 400, "must be a JSON object"),
    ({"instruction": "x", "image": np.zeros((8, 8, 3), np.uint8)}, 400, "'state' is missing"),
    ({"instruction": 3}, 400, "'instruction' must be a string"),
    ({"instruction": "x", "state": np.zeros(6, np.float32)}, 400, "'image' (OpenVLA) or 'full_image'"),
    ({"instruction": "x", "state": np.zeros(6, np.float32), "image": np.zeros((0, 0, 3), np.uint8)}, 400,
     "'image' must be an (H, W, 3) uint8 image"),
    ({"encoded": 5}, 400, "'encoded' request carries only"),
])
def test_malformed_requests_get_an_error_and_the_server_goes_on(body, status, error):
    so101 = robot()
    with serve(smooth(so101), so101) as server:
        got_status, reply = post(server.url, body)
        assert got_status == status and error in reply["error"]
        bad = request(so101) | {"image": np.zeros((4, 4), np.uint8)}
        got_status, reply = post(server.url, bad)
        assert got_status == 400 and "'image' must be an (H, W, 3) uint8 image" in reply["error"]
        got_status, reply = post(server.url, request(so101))
        assert got_status == 200 and reply.shape == (7,)


def test_encoded_requests_get_encoded_replies_as_openvla_does():
    so101 = robot()
    with serve(smooth(so101), so101) as server:
        status, reply = post(server.url, {"encoded": wire.dumps(request(so101))})
        assert status == 200 and isinstance(reply, str) and wire.loads(reply).shape == (7,)


def test_token_size_limit_paths_and_health():
    so101 = robot()
    with serve(smooth(so101), so101, token="s3cret", max_message_bytes=1_000_000) as server:
        status, reply = post(server.url, request(so101))
        assert status == 401 and "token" in reply["error"]
        status, reply = post(server.url, request(so101), headers={"Authorization": "Bearer s3cret"})
        assert status == 200
        status, reply = post(server.url, request(so101, size=(480, 640)), headers={"Authorization": "Bearer s3cret"})
        assert status == 413 and "exceeds the server's limit" in reply["error"]
        host, port = server.url.split("//")[1].split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=5)
        connection.request("GET", "/healthz")
        assert connection.getresponse().read() == b"OK\n"
        connection.request("GET", "/other")
        assert connection.getresponse().status == 404
        connection.close()
        with pytest.raises(PolicyError, match="refused the request.*VLA_ROS_SERVE_TOKEN"):
            make_policy(server.url, embodiment=so101)
        remote = make_policy(server.url, embodiment=so101, options=PolicyOptions(token="s3cret"))
        check_policy(remote, so101)
        remote.close()


def test_the_arm_holds_while_the_server_is_away_and_the_client_reconnects():
    from test_remote_gr00t import check_outage

    so101 = robot()
    policy = smooth(so101)
    server = serve(policy, so101)
    remote = OpenVlaRemotePolicy(server.url, embodiment=so101, config=RemoteConfig(
        connect_timeout_s=3.0, request_timeout_s=1.0, retry_initial_s=0.02, retry_max_s=0.1))
    try:
        check_outage(remote, so101, server, lambda: BackgroundServer(OpenVlaServer(
            policy, ServeConfig(port=server.port), embodiment=so101)).start(), first_error="the arm holds")
    finally:
        remote.close()
        server.stop()


def test_policy_failure_is_answered_and_the_client_goes_on():
    so101 = robot()
    policy = smooth(so101)
    with serve(policy, so101) as server:
        remote = make_policy(server.url, embodiment=so101)
        batch, _ = EmbodimentAdapter(so101, remote.metadata.features).to_policy_observation(
            so101.example_observation())
        policy.delay_s = float("nan")  # time.sleep raises ValueError inside the model call
        with pytest.raises(PolicyError, match="HTTP 500.*policy failed: ValueError"):
            remote.predict_chunk(batch)
        policy.delay_s = 0.0
        assert remote.predict_chunk(batch).shape == (2, 6)
        remote.close()


def test_concurrent_robots_share_forward_passes():
    from test_remote_gr00t import BatchingPolicy

    so101 = robot(action_space="joints")
    policy = BatchingPolicy(features(action_dt_s=so101.control_period_s, image_size=(32, 32)))
    policy.delay_s = 0.05
    with serve(policy, so101, batch=BatchConfig(max_batch=4, max_wait_s=0.005)) as server:
        statuses: list[int] = []

        def client() -> None:
            for _ in range(4):
                statuses.append(post(server.url, request(so101))[0])

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert statuses == [200] * 16
    assert 1 < max(policy.batch_sizes) <= 4
