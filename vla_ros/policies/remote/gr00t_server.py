"""A vla_ros policy behind Isaac-GR00T's policy-server protocol (see gr00t_protocol.py), for GR00T clients.

The socket is a ZMQ ROUTER, which answers Isaac-GR00T's REQ clients like their REP server does, but lets many
requests be in flight at once: they are decoded in parallel, reach the model worker together and share a
forward pass (batching.py). Only the serving thread touches the socket; replies come back to it through a queue
and an in-process wake-up socket.

State and action parts are in the robot's policy units (`policy_unit` in its YAML); images of any size are
resized with padding to the policy's input. The embodiment tag is a label chosen at start-up: the server
serves one policy for one robot layout. `reset` answers {} and touches nothing (the model is shared by every
client) unless its options carry a `seed`, which reseeds the served policy's sampling (reproducible runs of one
client: tests, replays); `kill` is refused: the operator stops the server.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from vla_ros.core.adapter import EmbodimentAdapter
from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import ConfigError, MissingDependencyError, ObservationError, PolicyError
from vla_ros.core.features import STATE, TASK, PolicyObservation, image_key, image_mask_key
from vla_ros.core.images import resize_with_pad
from vla_ros.policies.base import Policy
from vla_ros.policies.remote import gr00t_protocol as wire
from vla_ros.policies.remote.batching import InferenceBatcher
from vla_ros.policies.remote.server import ServeConfig, exposure_warning

logger = logging.getLogger("vla_ros.serve")

DEFAULT_EMBODIMENT_TAG = "new_embodiment"  # Isaac-GR00T's tag for robots outside its pretraining mix
DECODER_THREADS = 4  # requests decoded at once; more buys nothing on the few cores a robot's server has
_wake_ids = itertools.count()


def import_zmq():
    try:
        import zmq
    except ImportError as exc:
        raise MissingDependencyError("pyzmq", "remote", "The GR00T policy protocol") from exc
    return zmq


class Gr00tServer:
    """Serves one Policy to Isaac-GR00T clients (N1.6's nested observations; N1.5's flat ones too)."""

    def __init__(self, policy: Policy, config: ServeConfig | None = None, *,
                 embodiment: EmbodimentConfig, embodiment_tag: str = DEFAULT_EMBODIMENT_TAG):
        self.policy = policy
        self.config = config = config or ServeConfig(port=wire.DEFAULT_PORT)
        self.embodiment = embodiment
        self.embodiment_tag = embodiment_tag
        self.features = features = policy.metadata.features
        self.layout = wire.layout_from_config(embodiment)
        self.adapter = EmbodimentAdapter(embodiment, features)
        uncovered = [j for j in embodiment.joint_names if j not in {n for g in self.layout.state.values() for n in g}]
        if uncovered:
            raise ConfigError(f"joints {uncovered} are in no GR00T state part: the served policy reads every joint",
                              source=embodiment.source, key="policy_servers.gr00t.state")
        self._state_index = self.layout.joint_indices(embodiment, self.layout.state)
        self._action_index = self.layout.joint_indices(embodiment, self.layout.action)
        self._camera_key = {c.name: c.policy_key for c in embodiment.cameras}
        self.modality_configs = {
            "video": wire.ModalityConfig((0,), tuple(self.layout.video)),
            "state": wire.ModalityConfig((0,), tuple(self.layout.state)),
            "action": wire.ModalityConfig(tuple(range(features.chunk_size)), tuple(self.layout.action)),
            "language": wire.ModalityConfig((0,), (self.layout.language,)),
        }
        self._batcher: InferenceBatcher | None = None
        self._decoders: ThreadPoolExecutor | None = None
        self._outbox: queue.Queue[list[bytes]] = queue.Queue()
        self._wake_lock = threading.Lock()
        self._wake = None
        self.port: int | None = None
        self.requests_served = 0

    @property
    def url(self) -> str:
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"gr00t://{host}:{self.port if self.port is not None else self.config.port}"

    def serve_until(self, stop: threading.Event, *, on_listening=None) -> None:
        """Listen until `stop` is set; `on_listening(port)` once bound."""
        zmq = import_zmq()
        context = zmq.Context()
        sock = context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        # Oversize frames are dropped by ZMQ with the peer's connection; the client's request times out.
        sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes)
        endpoint = f"inproc://vla_ros_gr00t_wake_{next(_wake_ids)}"
        wake_in = context.socket(zmq.PULL)
        wake_in.bind(endpoint)
        self._wake = context.socket(zmq.PUSH)
        self._wake.connect(endpoint)
        try:
            try:
                host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
                if self.config.port == 0:
                    self.port = sock.bind_to_random_port(f"tcp://{host}")
                else:
                    sock.bind(f"tcp://{host}:{self.config.port}")
                    self.port = self.config.port
            except zmq.ZMQError as exc:
                raise ConfigError(f"cannot listen on {self.config.host}:{self.config.port}: {exc}; choose another "
                                  "--port or stop the process using it") from exc
            warning = exposure_warning(self.config.host, token=self.config.token)
            if warning:
                logger.warning(warning)
            self._batcher = InferenceBatcher(self.policy, self.config.batch)
            # Requests are decoded (msgpack, .npy, resizing) in parallel, so that concurrent ones reach the model
            # worker together; only this thread touches the socket.
            self._decoders = ThreadPoolExecutor(max_workers=DECODER_THREADS, thread_name_prefix="vla_ros_gr00t_decode")
            layout = self.layout
            logger.info("embodiment tag '%s': video %s, state %s, action %s x %d steps, language '%s' (policy units "
                        "of %s)", self.embodiment_tag, dict(layout.video), dict(layout.state), list(layout.action),
                        self.features.chunk_size, layout.language, self.embodiment.source)
            if on_listening is not None:
                on_listening(self.port)
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(wake_in, zmq.POLLIN)
            while not stop.is_set():
                events = dict(poller.poll(100))
                if wake_in in events:
                    while True:
                        try:
                            wake_in.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                while not self._outbox.empty():
                    sock.send_multipart(self._outbox.get_nowait())
                if sock in events:
                    while True:
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._decoders.submit(self._handle, frames)
        finally:
            if self._decoders is not None:
                self._decoders.shutdown(wait=True, cancel_futures=True)
            if self._batcher is not None:
                self._batcher.close()
            for s in (sock, wake_in, self._wake):
                s.close(linger=0)
            context.term()

    # -- requests --------------------------------------------------------------------------------------------------

    def _handle(self, frames: list[bytes]) -> None:
        if len(frames) != 3 or frames[1] != b"":
            logger.warning("dropped a message of %d frames that is not a ZMQ REQ request", len(frames))
            return
        identity, payload = frames[0], frames[2]
        try:
            request = wire.unpack(payload, source="client")
            if not isinstance(request, Mapping):
                raise PolicyError(f"a request must be a map with 'endpoint' and 'data', got {type(request).__name__}")
            if self.config.token is not None and not hmac.compare_digest(
                    str(request.get("api_token", "")).encode(), self.config.token.encode()):
                logger.warning("refused a request: missing or wrong token")
                raise PolicyError("Unauthorized: Invalid API token (set it with api_token, or VLA_ROS_SERVE_TOKEN)")
            endpoint = request.get("endpoint", "get_action")  # Isaac-GR00T's default
            if endpoint == "ping":
                return self._reply(identity, {"status": "ok", "message": "Server is running"})
            if endpoint == "get_modality_config":
                return self._reply(identity, dict(self.modality_configs))
            if endpoint == "reset":
                return self._reset(identity, request.get("data"))
            if endpoint == "kill":
                raise PolicyError("'kill' is not served by vla-ros serve: the operator stops the server")
            if endpoint != "get_action":
                raise PolicyError(f"Unknown endpoint: {endpoint!r} (served: {', '.join(wire.ENDPOINTS)})")
            self._get_action(identity, request.get("data"))
        except (PolicyError, ObservationError, ConfigError) as exc:
            self._reply(identity, {"error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - a request nobody foresaw: answered, and the server goes on
            logger.warning("a request failed unexpectedly", exc_info=exc)
            self._reply(identity, {"error": f"invalid request ({type(exc).__name__}: {exc})"})

    def _reply(self, identity: bytes, message: Any) -> None:
        try:
            payload = wire.pack(message)
        except PolicyError as exc:
            payload = wire.pack({"error": str(exc)})
        self._outbox.put([identity, b"", payload])
        with self._wake_lock:
            self._wake.send(b"")

    def _reset(self, identity: bytes, data: Any) -> None:
        options = data.get("options") if isinstance(data, Mapping) else None
        seed = options.get("seed") if isinstance(options, Mapping) else None
        if not isinstance(seed, int) or isinstance(seed, bool):
            return self._reply(identity, {})
        # Queued behind the requests already submitted, so that it takes effect between two chunks.
        self._batcher.call(lambda: self.policy.reset(seed=seed)).add_done_callback(lambda future: self._reply(
            identity, {} if future.exception() is None else {"error": f"reset failed: {future.exception()}"}))

    def _get_action(self, identity: bytes, data: Any) -> None:
        received = time.perf_counter()
        nested = isinstance(data, Mapping) and "observation" in data
        observations, batched = self._observations(data["observation"] if nested else data, nested=nested)
        futures = [self._batcher.submit(observation, client=identity) for observation in observations]
        remaining = [len(futures)]
        lock = threading.Lock()

        def done(_future) -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            try:
                results = [future.result() for future in futures]
            except BaseException as exc:  # noqa: BLE001 - the policy failed: the client gets the error
                logger.error("policy failed on a GR00T request", exc_info=exc)
                return self._reply(identity, {"error": f"policy failed: {type(exc).__name__}: {exc}"})
            chunks = np.stack([actions for actions, _ in results])  # (B, H, A)
            parts = {key: chunks[:, :, index] for key, index in self._action_index.items()}
            timing = results[0][1] | {"total_ms": (time.perf_counter() - received) * 1e3}
            self.requests_served += 1
            if nested:
                return self._reply(identity, [parts, {"server_timing": timing}])
            self._reply(identity, {f"action.{key}": value if batched else value[0] for key, value in parts.items()})

        for future in futures:
            future.add_done_callback(done)

    def _observations(self, observation: Any, *, nested: bool) -> tuple[list[PolicyObservation], bool]:
        """The policy observations of a GR00T observation (one per batch item), and whether it had a batch axis."""
        if not isinstance(observation, Mapping):
            raise ObservationError(f"an observation must be a map, got {type(observation).__name__}")

        def part(modality: str, key: str) -> Any:
            if nested:
                group = observation.get(modality)
                if not isinstance(group, Mapping) or key not in group:
                    raise ObservationError(f"observation['{modality}'] lacks '{key}' (this server reads "
                                           f"{list(self.modality_configs[modality].modality_keys)})")
                return group[key]
            name = key if modality == "language" else f"{modality}.{key}"
            if name not in observation:
                raise ObservationError(f"observation lacks '{name}'")
            return observation[name]

        states = {key: wire.check_observation_part(part("state", key), name=f"state.{key}", kind="state")
                  for key in self.layout.state}
        videos = {key: wire.check_observation_part(part("video", key), name=f"video.{key}", kind="video")
                  for key in self.layout.video}
        batched = next(iter(states.values())).ndim == 3
        size = len(next(iter(states.values()))) if batched else 1
        for key, value in (*states.items(), *videos.items()):
            if (value.ndim == (3 if key in states else 5)) != batched or batched and len(value) != size:
                want = f"a batch axis of {size}" if batched else "no batch axis"
                raise ObservationError(f"'{key}' has shape {value.shape}: every part needs {want}, as the state has")
            if value.shape[1 if batched else 0] != 1:
                raise ObservationError(f"'{key}' has {value.shape[1 if batched else 0]} time steps; this server "
                                       "reads the current one only (delta_indices [0])")
        texts = _language(part("language", self.layout.language), size)
        n_joints = len(self.embodiment.joints)
        result = []
        for b in range(size):
            policy_state = np.zeros(self.features.state_dim, dtype=np.float32)
            for key, index in self._state_index.items():
                value = (states[key][b] if batched else states[key])[-1]
                if value.shape != (len(index),):
                    joints = ", ".join(self.layout.state[key])
                    raise ObservationError(f"'state.{key}' has {value.shape[-1] if value.ndim else 0} values per "
                                           f"step, this server reads {len(index)} ({joints})")
                policy_state[index] = value
            policy_state[n_joints:] = 0.0
            batch: PolicyObservation = {STATE: policy_state, TASK: texts[b]}
            given = {self._camera_key[camera]: key for key, camera in self.layout.video.items()}
            for camera_key in self.features.camera_keys:
                if camera_key in given:
                    image = (videos[given[camera_key]][b] if batched else videos[given[camera_key]])[-1]
                    if self.features.image_size is not None:
                        image = resize_with_pad(image, self.features.image_size, padding=self.features.image_padding)
                    batch[image_key(camera_key)], batch[image_mask_key(camera_key)] = image, True
                else:
                    shape = self.features.image_size or (224, 224)
                    batch[image_key(camera_key)] = np.zeros((*shape, 3), dtype=np.uint8)
                    batch[image_mask_key(camera_key)] = False
            result.append(batch)
        return result, batched


def _language(value: Any, size: int) -> list[str]:
    """One instruction per batch item from [[text]] (N1.6), [text] (N1.5) or a plain string."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, np.ndarray) and value.dtype.kind in "SU":
        value = value.tolist()
    if not isinstance(value, list) or len(value) != size:
        raise ObservationError(f"the language part must hold {size} instruction(s), got {value!r:.80}")
    texts = []
    for item in value:
        if isinstance(item, list) and len(item) == 1:
            item = item[0]
        if isinstance(item, bytes):
            item = item.decode("utf-8", "replace")
        if not isinstance(item, str):
            raise ObservationError(f"an instruction must be a string, got {type(item).__name__}")
        texts.append(item)
    return texts
