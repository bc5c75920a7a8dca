"""Isaac-GR00T's policy-server protocol: `vla-ros serve --protocol gr00t` and the gr00t:// client, over loopback.

The servers are real (ZMQ on 127.0.0.1); raw REQ sockets stand in for Isaac-GR00T's own client where the exact
bytes matter (its N1.5 flat dialect, malformed and oversize requests).
"""

from __future__ import annotations

import io
import pickle
import threading
import time

import numpy as np
import pytest

zmq = pytest.importorskip("zmq", reason="the GR00T protocol needs the 'remote' extra (pyzmq)")
pytest.importorskip("msgpack", reason="the GR00T protocol needs the 'remote' extra (msgpack)")

from test_remote_policy import SmoothPolicy, expected_actions, features  # noqa: E402

from vla_ros.core.adapter import EmbodimentAdapter  # noqa: E402
from vla_ros.core.embodiment import embodiment_from_dict, load_embodiment  # noqa: E402
from vla_ros.core.errors import ConfigError, PolicyError  # noqa: E402
from vla_ros.core.features import STATE  # noqa: E402
from vla_ros.policies.checks import check_policy  # noqa: E402
from vla_ros.policies.factory import PolicyOptions, make_policy  # noqa: E402
from vla_ros.policies.remote import gr00t_protocol as wire  # noqa: E402
from vla_ros.policies.remote.batching import BatchConfig  # noqa: E402
from vla_ros.policies.remote.client import RemoteConfig  # noqa: E402
from vla_ros.policies.remote.gr00t_client import Gr00tRemotePolicy  # noqa: E402
from vla_ros.policies.remote.gr00t_server import Gr00tServer  # noqa: E402
from vla_ros.policies.remote.server import ServeConfig  # noqa: E402
from vla_ros.policies.remote.service import BackgroundServer  # noqa: E402

FAST_RETRY = RemoteConfig(connect_timeout_s=3.0, request_timeout_s=2.0, retry_initial_s=0.02, retry_max_s=0.1)


@pytest.fixture
def so101():
    return load_embodiment("so101")


def serve(policy, embodiment, **config) -> BackgroundServer:
    return BackgroundServer(Gr00tServer(policy, ServeConfig(**({"port": 0} | config)), embodiment=embodiment)).start()


def smooth(embodiment, **overrides) -> SmoothPolicy:
    return SmoothPolicy(features(action_dt_s=embodiment.control_period_s, image_size=(32, 32), **overrides))


def raw_request(url: str, message, *, timeout_s: float = 5.0):
    """One request on a fresh REQ socket, as Isaac-GR00T's client sends it; the decoded reply."""
    context = zmq.Context.instance()
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(url.replace("gr00t://", "tcp://"))
    try:
        sock.send(message if isinstance(message, bytes) else wire.pack(message))
        assert sock.poll(int(timeout_s * 1e3)), "no reply"
        return wire.unpack(sock.recv())
    finally:
        sock.close()


def flat_observation(size=(48, 64), task="touch the red cube") -> dict:
    """Isaac-GR00T N1.5's flat observation for the so101 layout (no batch axis, one time step)."""
    rng = np.random.default_rng(0)
    return {"video.front": rng.integers(0, 256, (1, *size, 3), dtype=np.uint8),
            "video.wrist": rng.integers(0, 256, (1, *size, 3), dtype=np.uint8),
            "state.single_arm": rng.normal(size=(1, 5)).astype(np.float32),
            "state.gripper": np.array([[0.3]], dtype=np.float32),
            wire.DEFAULT_LANGUAGE_KEY: [task]}


# -- codec ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("array", [np.arange(12, dtype=np.float32).reshape(3, 4),
                                   np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
                                   np.array(2.5, dtype=">f8"), np.array([True, False]), np.zeros((0, 3), np.uint8),
                                   np.array(["a", "bc"])])
def test_codec_round_trips_npy_arrays(array):
    decoded = wire.unpack(wire.pack({"x": [array]}))["x"][0]
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


def test_codec_writes_what_numpy_reads_and_reads_what_numpy_writes():
    """The .npy bytes are numpy's own: np.load(allow_pickle=False) reads ours, we read np.save's."""
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    import msgpack

    raw = msgpack.unpackb(wire.pack({"a": array}))["a"]
    assert raw["__ndarray_class__"] is True
    np.testing.assert_array_equal(np.load(io.BytesIO(raw["as_npy"]), allow_pickle=False), array)
    buffer = io.BytesIO()
    np.save(buffer, array.T, allow_pickle=False)
    payload = msgpack.packb({"a": {"__ndarray_class__": True, "as_npy": buffer.getvalue()}})
    np.testing.assert_array_equal(wire.unpack(payload)["a"], array.T)


def test_modality_configs_of_both_generations_decode():
    import msgpack

    n16 = {"__ModalityConfig_class__": True, "as_json": {"delta_indices": [0], "modality_keys": ["front"],
                                                         "action_configs": None}}
    n15 = {"__ModalityConfig_class__": True, "as_json": '{"delta_indices": [0], "modality_keys": ["video.front"]}'}
    new, old = wire.unpack(msgpack.packb([n16, n15]))
    assert new.modality_keys == ("front",) and not new.json_string and new.extra == {"action_configs": None}
    assert old.modality_keys == ("video.front",) and old.json_string


class _Trap:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (type(self.path).touch, (self.path,))


def test_pickles_are_never_unpickled(tmp_path):
    trap = tmp_path / "unpickled"
    with pytest.raises(PolicyError, match="not a GR00T msgpack message.*never accepted"):
        wire.unpack(pickle.dumps({"x": _Trap(trap)}))
    # An .npy of object dtype carries a pickle after its header: refused from the header, never loaded.
    buffer = io.BytesIO()
    np.save(buffer, np.array([_Trap(trap)], dtype=object), allow_pickle=True)
    import msgpack

    with pytest.raises(PolicyError, match="refusing to receive an array of dtype '\\|O'"):
        wire.unpack(msgpack.packb({"x": {"__ndarray_class__": True, "as_npy": buffer.getvalue()}}))
    with pytest.raises(PolicyError, match="extension type 7"):
        wire.unpack(msgpack.packb({"x": msgpack.ExtType(7, b"x")}))
    assert not trap.exists()


# -- layout -----------------------------------------------------------------------------------------------------------


def test_default_layout_splits_arm_and_gripper(so101):
    layout = wire.layout_from_config(so101)
    assert layout.video == {"front": "front", "wrist": "wrist"}
    assert layout.state == {"single_arm": so101.joint_names[:5], "gripper": ("gripper",)}
    server = {"video": wire.ModalityConfig((0,), ("webcam",)), "state": wire.ModalityConfig((0,), ("arm", "hand")),
              "action": wire.ModalityConfig(tuple(range(16)), ("arm", "hand")),
              "language": wire.ModalityConfig((0,), ("task",))}
    with pytest.raises(ConfigError, match="video keys \\['webcam'\\].*policy_servers.gr00t.video"):
        wire.layout_from_config(so101, server)


def test_yaml_layout_is_checked_at_start(so101):
    def robot(gr00t):
        data = {"robot": "r", "control_rate_hz": 30.0, "cameras": [{"name": "top", "policy_key": "front",
                                                                     "width": 64, "height": 48}],
                "joints": [{"name": n, "position_limits": [-1, 1], "velocity_limit": 1, "acceleration_limit": 1,
                            "home": 0, "policy_unit": "rad"} for n in ("a", "b")],
                "policy_servers": {"gr00t": gr00t}}
        return embodiment_from_dict(data, source="r.yaml")

    layout = wire.layout_from_config(robot({"video": {"ego_view": "top"}, "state": {"joints": ["b", "a"]}}))
    assert layout.video == {"ego_view": "top"} and layout.action == {"joints": ("b", "a")}
    with pytest.raises(ConfigError, match="r.yaml.*policy_servers.gr00t.state.*'c' \\(in 'joints'\\) is not a joint"):
        wire.layout_from_config(robot({"state": {"joints": ["a", "c"]}}))
    with pytest.raises(ConfigError, match="policy_servers.gr00t.action.*\\['b'\\] are in no GR00T action part"):
        wire.layout_from_config(robot({"state": {"j": ["a", "b"]}, "action": {"j": ["a"]}}))
    with pytest.raises(ConfigError, match="policy_servers.gr00t.vidoe.*unknown key.*video"):
        wire.layout_from_config(robot({"vidoe": {}}))


# -- server and client ------------------------------------------------------------------------------------------------


def test_client_gets_exact_actions_through_the_server(so101):
    policy = smooth(so101)
    with serve(policy, so101) as server:
        remote = make_policy(server.url, embodiment=so101)
        try:
            check_policy(remote, so101, instruction="touch the red cube")
            meta = remote.metadata
            assert meta.name == "gr00t" and remote.dialect == "n1.6"
            assert meta.features.chunk_size == 10 and meta.features.action_dim == 6
            observation = so101.example_observation(seed=3, instruction="touch the red cube")
            batch, _ = EmbodimentAdapter(so101, meta.features).to_policy_observation(observation)
            actions = remote.predict_chunk(batch)
            served_state = np.pad(batch[STATE], (0, 2))  # policy units both sides, zero-padded to the policy's 8
            np.testing.assert_allclose(actions, expected_actions(policy, served_state)[:, :6], rtol=1e-6)
            assert policy.tasks[-1] == "touch the red cube"
            assert remote.last_server_timing["batch_size"] == 1
        finally:
            remote.close()


def test_n15_flat_request_gets_a_flat_reply(so101):
    policy = smooth(so101)
    with serve(policy, so101) as server:
        configs = raw_request(server.url, {"endpoint": "get_modality_config"})
        assert configs["action"].delta_indices == tuple(range(10))
        assert configs["language"].modality_keys == (wire.DEFAULT_LANGUAGE_KEY,)
        observation = flat_observation()
        reply = raw_request(server.url, {"endpoint": "get_action", "data": observation})
        assert sorted(reply) == ["action.gripper", "action.single_arm"]
        state = np.zeros(8, np.float32)
        state[:5], state[5] = observation["state.single_arm"][0], 0.3
        expected = expected_actions(policy, state)
        np.testing.assert_allclose(reply["action.single_arm"], expected[:, :5], rtol=1e-6)
        np.testing.assert_allclose(reply["action.gripper"], expected[:, 5:6], rtol=1e-6)
        assert raw_request(server.url, {"endpoint": "ping"})["status"] == "ok"
        assert raw_request(server.url, {"endpoint": "reset", "data": {"options": None}}) == {}


@pytest.mark.parametrize("message, error", [
    (b"\x80\x04not msgpack", "not a GR00T msgpack message"),
    ([1, 2], "a request must be a map"),
    ({"endpoint": "train"}, "Unknown endpoint: 'train'"),
    ({"endpoint": "kill"}, "'kill' is not served"),
    ({"endpoint": "get_action", "data": {"observation": {"video": {}}}}, "lacks 'single_arm'"),
    ({"endpoint": "get_action", "data": flat_observation() | {"state.gripper": np.zeros((1, 3), np.float32)}},
     "'state.gripper' has 3 values per step, this server reads 1"),
    ({"endpoint": "get_action", "data": flat_observation() | {"video.front": np.zeros((1, 4, 4), np.uint8)}},
     "'video.front' must be"),
    ({"endpoint": "get_action", "data": flat_observation() | {"video.front": np.zeros((1, 0, 0, 3), np.uint8)}},
     "'video.front' must be"),
    ({"endpoint": "get_action", "data": flat_observation() | {wire.DEFAULT_LANGUAGE_KEY: [[1]]}},
     "an instruction must be a string"),
])
def test_malformed_requests_get_an_error_and_the_server_goes_on(so101, message, error):
    with serve(smooth(so101), so101) as server:
        reply = raw_request(server.url, message)
        assert error in reply["error"]
        assert raw_request(server.url, {"endpoint": "ping"})["status"] == "ok"


def test_token_is_required_when_set(so101):
    with serve(smooth(so101), so101, token="s3cret") as server:
        assert "Unauthorized" in raw_request(server.url, {"endpoint": "ping"})["error"]
        assert raw_request(server.url, {"endpoint": "ping", "api_token": "s3cret"})["status"] == "ok"
        with pytest.raises(PolicyError, match="Unauthorized.*VLA_ROS_SERVE_TOKEN"):
            Gr00tRemotePolicy(server.url, embodiment=so101, token="wrong", config=FAST_RETRY)
        remote = make_policy(server.url, embodiment=so101, options=PolicyOptions(token="s3cret"))
        check_policy(remote, so101)
        remote.close()


def test_oversize_message_is_dropped_and_the_server_goes_on(so101):
    with serve(smooth(so101), so101, max_message_bytes=64 * 1024) as server:
        big = flat_observation(size=(240, 320))  # 2 x 230 kB
        context = zmq.Context.instance()
        sock = context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(server.url.replace("gr00t://", "tcp://"))
        sock.send(wire.pack({"endpoint": "get_action", "data": big}))
        assert not sock.poll(500), "an oversize request was answered"
        sock.close()
        assert "action.gripper" in raw_request(server.url, {"endpoint": "get_action", "data": flat_observation()})


def test_unreachable_server_fails_at_start_with_advice(so101):
    with pytest.raises(PolicyError, match="unreachable.*vla-ros serve --protocol gr00t"):
        Gr00tRemotePolicy("gr00t://127.0.0.1:1", embodiment=so101,
                          config=RemoteConfig(connect_timeout_s=0.5, request_timeout_s=0.2, retry_initial_s=0.05,
                                              retry_max_s=0.1))
    with pytest.raises(ConfigError, match="gr00t://host:port"):
        Gr00tRemotePolicy("gr00t://127.0.0.1", embodiment=so101)


def check_outage(remote, embodiment, server: BackgroundServer, restart, *, first_error: str) -> None:
    """Stop `server` under `remote`: the first request fails with `first_error`, the next at once (the arm holds);
    `restart()` (a BackgroundServer on the same port) brings the client back. Stops every server it started."""
    batch, _ = EmbodimentAdapter(embodiment, remote.metadata.features).to_policy_observation(
        embodiment.example_observation())
    shape = remote.predict_chunk(batch).shape
    server.stop()
    with pytest.raises(PolicyError, match=first_error):
        remote.predict_chunk(batch)
    started = time.monotonic()
    with pytest.raises(PolicyError, match="unreachable since.*the arm holds"):
        remote.predict_chunk(batch)
    assert time.monotonic() - started < 0.1, "predict_chunk blocked while the server was away"
    server = restart()
    try:
        deadline = time.monotonic() + 5
        while not remote.connected:
            assert time.monotonic() < deadline, "the client did not reconnect"
            time.sleep(0.02)
        assert remote.predict_chunk(batch).shape == shape
    finally:
        server.stop()


def test_the_arm_holds_while_the_server_is_away_and_the_client_reconnects(so101):
    policy = smooth(so101)
    server = serve(policy, so101)
    remote = Gr00tRemotePolicy(server.url, embodiment=so101, config=RemoteConfig(
        connect_timeout_s=3.0, request_timeout_s=0.3, retry_initial_s=0.02, retry_max_s=0.1))
    try:
        check_outage(remote, so101, server, lambda: BackgroundServer(Gr00tServer(
            policy, ServeConfig(port=server.port), embodiment=so101)).start(), first_error="no reply.*within 0.3 s")
    finally:
        remote.close()
        server.stop()


class BatchingPolicy(SmoothPolicy):
    """SmoothPolicy with `predict_chunks`: records the batch sizes it was called with."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_sizes: list[int] = []

    def predict_chunks(self, observations):
        self.batch_sizes.append(len(observations))
        time.sleep(self.delay_s)
        return np.stack([expected_actions(self, o[STATE]) for o in observations])


def test_concurrent_clients_share_forward_passes(so101):
    policy = BatchingPolicy(features(action_dt_s=so101.control_period_s, image_size=(32, 32)))
    policy.delay_s = 0.05
    results: list[bool] = []
    with serve(policy, so101, batch=BatchConfig(max_batch=4, max_wait_s=0.005)) as server:
        def client(seed: int) -> None:
            remote = Gr00tRemotePolicy(server.url, embodiment=so101, config=FAST_RETRY)
            adapter = EmbodimentAdapter(so101, remote.metadata.features)
            for step in range(4):
                batch, state = adapter.to_policy_observation(so101.example_observation(seed=seed * 10 + step))
                expected = expected_actions(policy, EmbodimentAdapter(so101, policy.metadata.features)
                                            .state_to_policy(state))[:, :6]
                results.append(np.allclose(remote.predict_chunk(batch), expected, rtol=1e-5))
            remote.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert results == [True] * 16
    assert max(policy.batch_sizes) > 1 and max(policy.batch_sizes) <= 4


@pytest.mark.parametrize("protocol", ["gr00t", "openvla"])
def test_vla_ros_serve_speaks_the_protocol(tmp_path, protocol):
    """The real `vla-ros serve --protocol ...` in a subprocess, a token from the environment, SIGTERM to stop."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from test_remote_policy import ROOT, free_port

    (tmp_path / "config.json").write_text('{"type": "remote_test_smooth"}')
    port = free_port()
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from vla_ros.policies import factory; "
              "factory.CHECKPOINT_LOADERS['remote_test_smooth'] = 'test_remote_policy:load_test_checkpoint'; "
              "from vla_ros.cli.main import main; sys.exit(main(sys.argv[2:]))")
    env = os.environ | {"VLA_ROS_SERVE_TOKEN": "s3cret", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(Path(__file__).parent), "serve", "--protocol", protocol, "--policy",
         str(tmp_path), "--robot", "so101", "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True)
    so101 = load_embodiment("so101")
    try:
        deadline = time.monotonic() + 60  # loading torch on a busy 2-core machine takes a while
        while True:
            try:
                remote = make_policy(f"{'gr00t' if protocol == 'gr00t' else 'openvla+http'}://127.0.0.1:{port}",
                                     embodiment=so101, options=PolicyOptions(token="s3cret"))
                break
            except PolicyError:
                assert process.poll() is None, process.stderr.read()
                assert time.monotonic() < deadline, f"vla-ros serve --protocol {protocol} did not answer in 60 s"
        check_policy(remote, so101)
        remote.close()
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert f"serving policy 'smooth' on {protocol.replace('openvla', 'openvla+http')}://127.0.0.1:{port}" in stderr
    assert "token required" in stderr and "stopped after" in stderr


def test_client_speaks_n15_to_an_n15_style_server():
    """A REP server in Isaac-GR00T N1.5's style (eval/service.py + model/policy.py): configs as JSON strings,
    flat observations without a batch axis, flat actions squeezed by numpy (a one-wide part comes back (H,)).
    Its one camera, `webcam`, is the so101's front camera by the robot YAML's policy_servers.gr00t.video."""
    import json

    import msgpack
    import yaml

    path = load_embodiment("so101").source
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    data["policy_servers"]["gr00t"] = {"video": {"webcam": "front"}}
    so101 = embodiment_from_dict(data, source=path)

    def npy(array):
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        return {"__ndarray_class__": True, "as_npy": buffer.getvalue()}

    def config(indices, keys):
        return {"__ModalityConfig_class__": True, "as_json": json.dumps({"delta_indices": indices,
                                                                        "modality_keys": keys})}

    def decode(obj):
        return np.load(io.BytesIO(obj["as_npy"]), allow_pickle=False) if "__ndarray_class__" in obj else obj

    context = zmq.Context.instance()
    rep = context.socket(zmq.REP)
    rep.setsockopt(zmq.LINGER, 0)
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    seen: list[dict] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if not rep.poll(50):
                continue
            request = msgpack.unpackb(rep.recv(), object_hook=decode)
            endpoint = request.get("endpoint", "get_action")
            if endpoint == "ping":
                reply = {"status": "ok", "message": "Server is running"}
            elif endpoint == "get_modality_config":
                reply = {"video": config([0], ["video.webcam"]),
                         "state": config([0], ["state.single_arm", "state.gripper"]),
                         "action": config(list(range(16)), ["action.single_arm", "action.gripper"]),
                         "language": config([0], ["annotation.human.task_description"])}
            elif endpoint == "get_action":
                observation = request["data"]
                seen.append(observation)
                arm, gripper = observation["state.single_arm"][-1], observation["state.gripper"][-1]
                reply = {"action.single_arm": npy(np.tile(arm + 1.0, (16, 1)).astype(np.float32)),
                         "action.gripper": npy(np.full(16, gripper[0] + 0.5, dtype=np.float32))}
            else:
                reply = {"error": f"Unknown endpoint: {endpoint}"}
            rep.send(msgpack.packb(reply))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        remote = Gr00tRemotePolicy(f"gr00t://127.0.0.1:{port}", embodiment=so101, config=FAST_RETRY)
        assert remote.dialect == "n1.5" and remote.metadata.features.camera_keys == ("front",)
        remote.reset(seed=1)  # N1.5 has no reset endpoint: not called
        batch, _ = EmbodimentAdapter(so101, remote.metadata.features).to_policy_observation(
            so101.example_observation(seed=4, instruction="touch the red cube"))
        chunk = remote.predict_chunk(batch)
        observation = seen[-1]
        assert sorted(observation) == ["annotation.human.task_description", "state.gripper", "state.single_arm",
                                       "video.webcam"]
        assert observation["video.webcam"].shape == (1, 480, 640, 3) and observation["state.gripper"].shape == (1, 1)
        assert observation["annotation.human.task_description"] == ["touch the red cube"]
        np.testing.assert_allclose(chunk[:, :5], np.tile(batch[STATE][:5] + 1.0, (16, 1)), rtol=1e-6)
        np.testing.assert_allclose(chunk[:, 5], batch[STATE][5] + 0.5, rtol=1e-6)
        remote.close()
    finally:
        stop.set()
        thread.join(timeout=5)
        rep.close()


def test_observation_histories_are_refused_by_name(so101):
    layout = wire.layout_from_config(so101)
    configs = {"video": wire.ModalityConfig((0,), ("front", "wrist")),
               "state": wire.ModalityConfig((-2, -1, 0), ("single_arm", "gripper")),
               "action": wire.ModalityConfig(tuple(range(16)), ("single_arm", "gripper")),
               "language": wire.ModalityConfig((0,), (wire.DEFAULT_LANGUAGE_KEY,))}
    with pytest.raises(ConfigError, match="state history at steps \\[-2, -1, 0\\].*current observation only"):
        wire.check_layout_against_server(layout, configs, source="server")
    configs["state"] = wire.ModalityConfig((0,), ("arm", "gripper"))
    with pytest.raises(ConfigError, match="state keys \\['arm', 'gripper'\\].*policy_servers.gr00t.state"):
        wire.check_layout_against_server(layout, configs, source="server")
