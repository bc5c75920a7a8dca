"""The remote policy: openpi's websocket protocol served by `vla-ros serve` and used by the ws:// client backend.

Every test runs a real server on 127.0.0.1 and talks to it over real sockets; the served policy is a small
deterministic one defined here, since the transport is what is under test.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("websockets", reason="the remote policy needs the 'remote' extra (websockets)")
pytest.importorskip("msgpack", reason="the remote policy needs the 'remote' extra (msgpack)")

import websockets.sync.client  # noqa: E402

from vla_ros.core.adapter import EmbodimentAdapter  # noqa: E402
from vla_ros.core.embodiment import load_embodiment  # noqa: E402
from vla_ros.core.errors import PolicyError  # noqa: E402
from vla_ros.core.features import STATE, PolicyFeatures, RobotObservation, image_key  # noqa: E402
from vla_ros.core.pipeline import ActionPipeline  # noqa: E402
from vla_ros.policies.base import Policy, PolicyMetadata  # noqa: E402
from vla_ros.policies.checks import check_policy  # noqa: E402
from vla_ros.policies.factory import PolicyOptions, make_policy  # noqa: E402
from vla_ros.policies.remote import protocol  # noqa: E402
from vla_ros.policies.remote.client import RemoteConfig, RemotePolicy  # noqa: E402
from vla_ros.policies.remote.server import PolicyServer, ServeConfig, ServerThread, exposure_warning  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAST_RETRY = RemoteConfig(connect_timeout_s=5.0, request_timeout_s=2.0, retry_initial_s=0.02, retry_max_s=0.1)
openpi_warning = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager")


class SmoothPolicy(Policy):
    """Actions approach `goal` exponentially from the observed state: a_i = goal + (s - goal) * exp(-rate t_i).

    Chunks computed from successive states of the same trajectory agree, so any seam in the commands comes
    from the transport or the pipeline, not from the policy.
    """

    def __init__(self, features: PolicyFeatures, goal: np.ndarray | None = None, *, rate_per_s: float = 1.0):
        self.metadata = PolicyMetadata(name="smooth", features=features, description="test policy",
                                       normalization={STATE: "IDENTITY"})
        self.goal = np.zeros(features.action_dim, dtype=np.float32) if goal is None else goal.astype(np.float32)
        self.rate_per_s = rate_per_s
        self.delay_s = 0.0
        self.tasks: list[str] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def reset(self, *, seed: int | None = None) -> None:
        pass

    def predict_chunk(self, observation, prefix=None) -> np.ndarray:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.delay_s)
            self.tasks.append(observation["task"])
            return expected_actions(self, observation[STATE])
        finally:
            with self._lock:
                self.active -= 1


def expected_actions(policy: SmoothPolicy, state: np.ndarray) -> np.ndarray:
    f = policy.metadata.features
    times = (np.arange(f.chunk_size) + 1) * f.action_dt_s
    decay = np.exp(-policy.rate_per_s * times)[:, None]
    return (policy.goal + (np.asarray(state, np.float32)[: f.action_dim] - policy.goal) * decay).astype(np.float32)


def features(**overrides) -> PolicyFeatures:
    values = dict(state_dim=8, action_dim=8, chunk_size=10, action_dt_s=1 / 30, camera_keys=("front", "wrist"),
                  image_size=(224, 224))
    return PolicyFeatures(**(values | overrides))


def load_test_checkpoint(path, *, embodiment, options):
    """A CHECKPOINT_LOADERS entry for the `vla-ros serve` subprocess test."""
    return SmoothPolicy(features(action_dt_s=embodiment.control_period_s))


def openpi_observation(state_dim=8, size=(224, 224), prompt="touch the red cube") -> dict:
    rng = np.random.default_rng(0)
    return {STATE: rng.normal(size=state_dim).astype(np.float32),
            image_key("front"): rng.integers(0, 256, (*size, 3), dtype=np.uint8),
            image_key("wrist"): rng.integers(0, 256, (*size, 3), dtype=np.uint8),
            "prompt": prompt}


@pytest.fixture
def so101():
    return load_embodiment("so101")


@pytest.fixture
def openpi_client():
    return pytest.importorskip("openpi_client.websocket_client_policy",
                               reason="pip install --no-deps openpi-client (its numpy<2 pin conflicts with ours)")


def serve(policy: Policy, **config) -> ServerThread:
    return ServerThread(PolicyServer(policy, ServeConfig(**({"port": 0} | config)), robot="so101")).start()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- codec ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.linspace(-1, 1, 7, dtype=np.float64),
    np.array([[1, -2], [3, 4]], dtype=np.int16)[:, ::-1],  # not contiguous
    np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
    np.zeros((0, 5), dtype=np.float16),
    np.array(3.5, dtype=">f4"),  # big-endian, 0-d
    np.array([True, False]),
    np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3),
    np.array(["front", "w"]),
])
def test_codec_round_trips_dtype_shape_and_values(array):
    decoded = protocol.unpack(protocol.pack({"x": [array, {"y": array}]}))
    for value in (decoded["x"][0], decoded["x"][1]["y"]):
        assert value.dtype == array.dtype and value.shape == array.shape
        np.testing.assert_array_equal(value, array)
        assert value.flags.writeable


def test_codec_round_trips_numpy_scalars_and_plain_values():
    message = {"f": np.float32(1.25), "i": np.int64(-3), "b": np.bool_(True), "s": "task", "n": None, "l": [1, 2.5]}
    decoded = protocol.unpack(protocol.pack(message))
    assert decoded == message
    assert type(decoded["f"]) is np.float32 and type(decoded["i"]) is np.int64


def test_codec_matches_openpi_client_both_ways():
    msgpack_numpy = pytest.importorskip("openpi_client.msgpack_numpy", reason="pip install --no-deps openpi-client")
    message = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.float32(2.0), "t": "x"}
    for decoded in (msgpack_numpy.unpackb(protocol.pack(message)), protocol.unpack(msgpack_numpy.packb(message))):
        np.testing.assert_array_equal(decoded["a"], message["a"])
        assert decoded["a"].dtype == np.float32 and decoded["s"] == np.float32(2.0) and decoded["t"] == "x"


@pytest.mark.parametrize("array", [np.array([{"a": 1}, None], dtype=object), np.zeros(2, dtype="V8"),
                                   np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")])])
def test_codec_refuses_to_send_object_and_void_arrays(array):
    with pytest.raises(PolicyError, match="refusing to send an array of dtype.*pickle"):
        protocol.pack({"x": array})


def test_codec_refuses_object_dtype_and_bad_arrays_on_receipt():
    import msgpack

    def frame(**fields):
        array = {"__ndarray__": True, "data": b"\0" * 8, "dtype": "<f4", "shape": [2]} | fields
        return msgpack.packb({"x": {key.encode(): value for key, value in array.items()}}, use_bin_type=True)

    protocol.unpack(frame())  # the well-formed one passes
    with pytest.raises(PolicyError, match="refusing to receive an array of dtype '\\|O'"):
        protocol.unpack(frame(dtype="|O"))
    with pytest.raises(PolicyError, match="refusing to receive.*'\\|V8'"):
        protocol.unpack(frame(dtype="|V8"))
    with pytest.raises(PolicyError, match="needs 12 bytes, got 8"):
        protocol.unpack(frame(shape=[3]))
    with pytest.raises(PolicyError, match="unknown dtype"):
        protocol.unpack(frame(dtype="not-a-dtype"))


def test_codec_refuses_unknown_msgpack_extensions():
    import msgpack

    with pytest.raises(PolicyError, match="extension type 42"):
        protocol.unpack(msgpack.packb({"x": msgpack.ExtType(42, b"payload")}))


class _Trap:
    """Unpickling this would create `path`: proof that nothing was unpickled if it does not exist."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_pickled_payloads_are_refused_by_the_codec_and_the_server(tmp_path):
    trap = tmp_path / "unpickled"
    payload = pickle.dumps({STATE: _Trap(trap)})
    with pytest.raises(PolicyError, match="not a msgpack message.*never accepted"):
        protocol.unpack(payload)
    with serve(SmoothPolicy(features())) as server, websockets.sync.client.connect(server.url) as ws:
        protocol.unpack(ws.recv(timeout=5))  # metadata
        ws.send(payload)
        error = ws.recv(timeout=5)
        assert isinstance(error, str) and "not a msgpack message" in error
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1007  # invalid data
    assert not trap.exists()


# -- the server with openpi-client ------------------------------------------------------------------------------------


@openpi_warning
def test_openpi_client_gets_metadata_and_actions_from_vla_ros_serve(tmp_path, openpi_client):
    """The real `vla-ros serve` command in a subprocess, a token from the environment, SIGTERM to stop."""
    (tmp_path / "config.json").write_text('{"type": "remote_test_smooth"}')
    port = free_port()
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from vla_ros.policies import factory; "
              "factory.CHECKPOINT_LOADERS['remote_test_smooth'] = 'test_remote_policy:load_test_checkpoint'; "
              "from vla_ros.cli.main import main; sys.exit(main(sys.argv[2:]))")
    env = os.environ | {"VLA_ROS_SERVE_TOKEN": "s3cret", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(Path(__file__).parent), "serve", "--policy", str(tmp_path),
         "--robot", "so101", "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                    assert response.status == 200 and response.read() == b"OK\n"
                break
            except OSError:
                assert process.poll() is None, process.stderr.read()
                assert time.monotonic() < deadline, "vla-ros serve did not answer /healthz within 20 s"
                time.sleep(0.1)
        client = openpi_client.WebsocketClientPolicy(host="127.0.0.1", port=port, api_key="s3cret")
        metadata = client.get_server_metadata()
        assert metadata["name"] == "smooth" and metadata["robot"] == "so101"
        assert metadata["features"]["chunk_size"] == 10 and metadata["features"]["camera_keys"] == ["front", "wrist"]
        observation = openpi_observation()
        reply = client.infer(observation)
        policy = load_test_checkpoint(None, embodiment=load_embodiment("so101"), options=None)
        np.testing.assert_allclose(reply["actions"], expected_actions(policy, observation[STATE]), rtol=1e-6)
        assert reply["actions"].dtype == np.float32 and reply["server_timing"]["infer_ms"] >= 0
        client._ws.close()
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert "serving policy 'smooth' on ws://127.0.0.1" in stderr and "token required" in stderr


@openpi_warning
def test_token_is_required_when_set(openpi_client, so101):
    with serve(SmoothPolicy(features()), token="s3cret") as server:
        for api_key in (None, "wrong"):
            with pytest.raises(websockets.exceptions.ConnectionClosed) as refused:
                openpi_client.WebsocketClientPolicy(server.url, api_key=api_key)
            assert refused.value.rcvd.code == 1008 and "token" in refused.value.rcvd.reason
        client = openpi_client.WebsocketClientPolicy(server.url, api_key="s3cret")
        assert client.infer(openpi_observation())["actions"].shape == (10, 8)
        client._ws.close()
        with pytest.raises(PolicyError, match="refused the connection.*VLA_ROS_SERVE_TOKEN"):
            RemotePolicy(server.url, embodiment=so101, token="wrong", config=FAST_RETRY)
        check_policy(make_policy(server.url, embodiment=so101, options=PolicyOptions(token="s3cret")), so101)


@openpi_warning
def test_oversize_message_is_refused_and_the_server_goes_on(openpi_client):
    policy = SmoothPolicy(features(camera_keys=("front",), image_size=None))
    with serve(policy, max_message_bytes=64 * 1024) as server:
        client = openpi_client.WebsocketClientPolicy(server.url)
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            client.infer(openpi_observation(size=(224, 224)))  # 2 x 150 kB
        assert closed.value.sent is not None and closed.value.sent.code == 1009  # message too big
        client = openpi_client.WebsocketClientPolicy(server.url)
        assert client.infer(openpi_observation(size=(32, 32)))["actions"].shape == (10, 8)
        client._ws.close()


@openpi_warning
def test_invalid_observation_gets_the_error_as_text_then_close(openpi_client):
    with serve(SmoothPolicy(features())) as server:
        client = openpi_client.WebsocketClientPolicy(server.url)
        with pytest.raises(RuntimeError, match="'observation.state' must be a \\(8,\\) float array"):
            client.infer(openpi_observation(state_dim=5))
        client = openpi_client.WebsocketClientPolicy(server.url)
        with pytest.raises(RuntimeError, match="'observation.images.front' must be a \\(224, 224, 3\\) uint8"):
            client.infer(openpi_observation(size=(100, 224)))


@openpi_warning
def test_many_clients_share_one_model_one_inference_at_a_time(openpi_client):
    policy = SmoothPolicy(features())
    policy.delay_s = 0.005
    replies: list[bool] = []
    with serve(policy) as server:
        def run_client(prompt: str) -> None:
            client = openpi_client.WebsocketClientPolicy(server.url)
            observation = openpi_observation(prompt=prompt)
            for _ in range(10):
                reply = client.infer(observation)
                replies.append(np.allclose(reply["actions"], expected_actions(policy, observation[STATE])))
            client._ws.close()

        threads = [threading.Thread(target=run_client, args=(f"task {i}",)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
    assert replies == [True] * 30
    assert policy.max_active == 1
    assert sorted(set(policy.tasks)) == ["task 0", "task 1", "task 2"]  # openpi's "prompt" arrives as the task


def test_healthz_needs_no_token():
    with serve(SmoothPolicy(features()), token="s3cret") as server, \
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as response:
        assert response.status == 200 and response.read() == b"OK\n"


def test_listening_beyond_loopback_is_flagged():
    assert exposure_warning("127.0.0.1", token=None) is None and exposure_warning("localhost", token=None) is None
    assert "no token is set" in exposure_warning("0.0.0.0", token=None)
    assert "no token" not in exposure_warning("0.0.0.0", token="s3cret")


def test_serve_refuses_the_expert(capsys):
    from vla_ros.cli.main import main

    assert main(["serve", "--policy", "expert", "--robot", "so101"]) == 2
    assert "cannot be served" in capsys.readouterr().err


# -- the client backend -----------------------------------------------------------------------------------------------


def test_remote_policy_conforms_and_reports_the_server(so101):
    with serve(SmoothPolicy(features(action_dt_s=so101.control_period_s))) as server:
        policy = make_policy(server.url, embodiment=so101)
        try:
            check_policy(policy, so101)
            meta = policy.metadata
            assert meta.name == "remote" and "'smooth' served at ws://127.0.0.1" in meta.description
            assert meta.features == features(action_dt_s=so101.control_period_s)
            assert meta.normalization == {STATE: "IDENTITY"} and server.url in meta.device
            assert policy.last_server_timing["infer_ms"] >= 0
        finally:
            policy.close()


def test_server_with_fewer_action_dims_than_joints_is_refused_at_connect(so101):
    with serve(SmoothPolicy(features(state_dim=6, action_dim=3))) as server, \
            pytest.raises(PolicyError, match="cannot drive robot 'so101'.*action_dim is 3.*6 joints"):
        RemotePolicy(server.url, embodiment=so101, config=FAST_RETRY)


def test_unreachable_server_fails_at_start_with_advice(so101):
    start = time.monotonic()
    with pytest.raises(PolicyError, match="unreachable: connection refused.*vla-ros serve"):
        RemotePolicy(f"ws://127.0.0.1:{free_port()}", embodiment=so101,
                     config=RemoteConfig(connect_timeout_s=0.5, retry_initial_s=0.05, retry_max_s=0.1))
    assert time.monotonic() - start < 3.0


def test_slow_reply_times_out_then_the_client_reconnects(so101):
    policy = SmoothPolicy(features())
    with serve(policy) as server:
        remote = RemotePolicy(server.url, embodiment=so101, config=RemoteConfig(
            request_timeout_s=0.2, retry_initial_s=0.02, retry_max_s=0.1))
        adapter = EmbodimentAdapter(so101, remote.metadata.features)
        batch, _ = adapter.to_policy_observation(so101.example_observation())
        policy.delay_s = 0.6
        start = time.monotonic()
        with pytest.raises(PolicyError, match="no chunk within 0.2 s"):
            remote.predict_chunk(batch)
        assert time.monotonic() - start < 0.5
        policy.delay_s = 0.0
        _wait_for(lambda: remote.connected, "the client to reconnect")
        _wait_for(lambda: policy.active == 0, "the server to finish the abandoned request")
        # Its late reply went to the old connection: this request gets its own answer.
        batch, _ = adapter.to_policy_observation(so101.example_observation(seed=1))
        np.testing.assert_allclose(remote.predict_chunk(batch), expected_actions(policy, batch[STATE]), rtol=1e-6)
        remote.close()


def test_foreign_openpi_server_without_vla_ros_metadata(so101):
    """A server in openpi's own style (its codec, metadata {}): the client probes the chunk shape."""
    msgpack_numpy = pytest.importorskip("openpi_client.msgpack_numpy", reason="pip install --no-deps openpi-client")
    import websockets.sync.server

    seen: list[dict] = []

    def handler(ws):
        ws.send(msgpack_numpy.packb({}))
        for frame in ws:
            observation = msgpack_numpy.unpackb(frame)
            seen.append(observation)
            state = observation[STATE]
            ws.send(msgpack_numpy.packb({"actions": np.tile(np.append(state, 0.5), (12, 1)).astype(np.float32),
                                         "server_timing": {"infer_ms": 0.0}}))

    with websockets.sync.server.serve(handler, "127.0.0.1", 0) as foreign:
        threading.Thread(target=foreign.serve_forever, daemon=True).start()
        remote = RemotePolicy(f"ws://127.0.0.1:{foreign.socket.getsockname()[1]}", embodiment=so101,
                              config=FAST_RETRY)
        try:
            assert remote.metadata.features == PolicyFeatures(
                state_dim=6, action_dim=7, chunk_size=12, action_dt_s=so101.control_period_s,
                camera_keys=("front", "wrist"), image_size=(224, 224))
            check_policy(remote, so101, instruction="pick up the cube")
        finally:
            remote.close()
            foreign.shutdown()
    assert seen[-1]["prompt"] == seen[-1]["task"] == "pick up the cube"
    assert seen[-1][image_key("front")].shape == (224, 224, 3)


def test_a_server_restarted_with_another_policy_is_not_used(so101):
    server = serve(SmoothPolicy(features()))
    remote = RemotePolicy(server.url, embodiment=so101, config=FAST_RETRY)
    try:
        port = server.port
        server.stop()
        server = ServerThread(PolicyServer(SmoothPolicy(features(chunk_size=20)), ServeConfig(port=port))).start()
        _wait_for(lambda: "now serves a different policy" in remote.status_message(), "the client to check it")
        assert not remote.connected
        with pytest.raises(PolicyError, match="now serves a different policy.*restart this node"):
            remote.predict_chunk({})
    finally:
        remote.close()
        server.stop()


def test_client_survives_a_server_restart_without_a_jump(so101):
    """Drive the ActionPipeline through RemotePolicy; stop the server mid-run, restart it on the same port."""
    chunk_features = features(chunk_size=15, action_dt_s=so101.control_period_s, image_size=(32, 32))
    goal_joints = so101.home + 0.7 * (so101.upper_limits - so101.home)
    goal = EmbodimentAdapter(so101, chunk_features).state_to_policy(goal_joints)
    policy = SmoothPolicy(chunk_features, goal, rate_per_s=0.8)
    server = serve(policy)
    port = server.port
    remote = RemotePolicy(server.url, embodiment=so101, config=FAST_RETRY)
    pipeline = ActionPipeline(so101, remote.metadata.features)
    period = so101.control_period_s
    measured = so101.home.copy()
    pipeline.reset(measured)
    commands, errors = [measured], []
    chunks = 0
    clock = [0.0]

    def run(ticks: int) -> None:
        nonlocal measured, chunks
        for _ in range(ticks):
            now = clock[0]
            if pipeline.needs_chunk(now):
                observation = RobotObservation(stamp=now, joint_names=so101.joint_names, joint_positions=measured,
                                               instruction="reach")
                batch, request = pipeline.prepare(observation)
                started = time.monotonic()
                try:
                    pipeline.accept_chunk(remote.predict_chunk(batch), request, now=now)
                    chunks += 1
                except PolicyError as exc:
                    assert time.monotonic() - started < 1.0, "predict_chunk blocked while the server was down"
                    pipeline.chunk_failed()
                    errors.append(str(exc))
            measured = pipeline.step(now, measured=measured, observation_stamp=now).positions  # perfect tracking
            commands.append(measured)
            clock[0] += period

    try:
        run(30)
        chunks_before = chunks
        server.stop()
        _wait_for(lambda: not remote.connected, "the client to notice the server is gone")
        outage_start = len(commands)
        run(45)  # 1.5 s: longer than the queued chunk
        assert chunks == chunks_before and errors
        assert "unreachable since" in errors[-1] and "the arm holds" in errors[-1]
        outage = np.array(commands[outage_start:])
        assert np.allclose(outage[-15:], outage[-1]), "the arm did not hold while the server was down"
        server = ServerThread(PolicyServer(policy, ServeConfig(port=port))).start()
        _wait_for(lambda: remote.connected, "the client to reconnect")
        run(60)
        assert chunks > chunks_before + 3
    finally:
        remote.close()
        server.stop()

    commands = np.array(commands)
    steps = np.abs(np.diff(commands, axis=0))
    assert (steps <= so101.velocity_limits * period + 1e-9).all()
    distance = np.abs(commands - goal_joints)
    assert (np.diff(distance, axis=0) <= 1e-9).all(), "the command moved away from the goal (a jump back)"
    assert (distance[-1] < distance[outage_start] - 0.05).all(), "no progress after the restart"


def _wait_for(condition, what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_policy_failure_reaches_the_client_as_text_and_it_recovers(so101):
    policy = SmoothPolicy(features())
    with serve(policy) as server:
        remote = RemotePolicy(server.url, embodiment=so101, config=FAST_RETRY)
        batch, _ = EmbodimentAdapter(so101, remote.metadata.features).to_policy_observation(so101.example_observation())
        policy.delay_s = float("nan")  # time.sleep raises ValueError inside the model call
        with pytest.raises(PolicyError, match="(?s)failed on this observation:\nTraceback.*ValueError"):
            remote.predict_chunk(batch)
        policy.delay_s = 0.0
        _wait_for(lambda: remote.connected, "the client to reconnect")
        np.testing.assert_allclose(remote.predict_chunk(batch), expected_actions(policy, batch[STATE]), rtol=1e-6)
        remote.close()


def test_serves_a_tiny_learned_checkpoint_unchanged(tmp_path, so101, monkeypatch):
    """A real backend (a tiny random pi0 through transformers) behind the server gives the chunk it gives locally."""
    pytest.importorskip("torch", reason="the pi0 backend needs torch")
    pytest.importorskip("transformers", minversion="5.4", reason="the pi0 backend needs transformers>=5.4")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from vla_ros.policies.pi0.random_model import random_pi0, save_checkpoint

    model, processor = random_pi0(tiny=True, chunk_size=10, num_inference_steps=3, camera_keys=("front", "wrist"))
    checkpoint = str(save_checkpoint(tmp_path / "tiny", model, processor))
    served, local = make_policy(checkpoint, embodiment=so101), make_policy(checkpoint, embodiment=so101)
    with serve(served) as server:
        remote = make_policy(server.url, embodiment=so101)
        try:
            check_policy(remote, so101)
            assert remote.metadata.features == local.metadata.features
            assert remote.metadata.normalization == local.metadata.normalization
            batch, _ = EmbodimentAdapter(so101, local.metadata.features).to_policy_observation(
                so101.example_observation(seed=2, instruction="touch the red cube"))
            served.reset(seed=5)
            local.reset(seed=5)
            np.testing.assert_array_equal(remote.predict_chunk(batch), local.predict_chunk(batch))
        finally:
            remote.close()
