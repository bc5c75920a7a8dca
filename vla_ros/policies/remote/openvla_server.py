"""A vla_ros policy behind OpenVLA's HTTP protocol (`POST /act`, see openvla_protocol.py), for OpenVLA clients.

One thread per connection (keep-alive) hands its request to the shared model worker, so concurrent robots share
forward passes (batching.py). The robot YAML's `policy_servers.openvla` says what an action is: the policy's
chunk is sampled every `step_s` from the observation on, and each sample becomes an action, joints as they are
or an end-effector move (forward kinematics) from the previous sample's pose. Single-step replies (OpenVLA)
carry the first; `chunked` replies (OpenVLA-OFT) carry every one the chunk holds.

Failures are answered with an HTTP error status and {"error": "<message>"} (OpenVLA's own server answers the
string "error"): 400 for a malformed request, 401 without the token, 404 for another path, 413 over the size
limit, 500 when the policy fails. GET /healthz answers "OK".
"""

from __future__ import annotations

import contextlib
import hmac
import http
import json
import logging
import socket
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import ConfigError, ObservationError, PolicyError
from vla_ros.core.features import STATE, TASK, PolicyObservation, image_key, image_mask_key
from vla_ros.core.images import resize_with_pad
from vla_ros.policies.base import Policy
from vla_ros.policies.remote import openvla_protocol as wire
from vla_ros.policies.remote.batching import InferenceBatcher
from vla_ros.policies.remote.server import AUTH_SCHEMES, HEALTH_PATH, ServeConfig, exposure_warning

logger = logging.getLogger("vla_ros.serve")


class OpenVlaServer:
    """Serves one Policy to OpenVLA and OpenVLA-OFT clients."""

    def __init__(self, policy: Policy, config: ServeConfig | None = None, *, embodiment: EmbodimentConfig,
                 chunked: bool = False):
        self.policy = policy
        self.config = config = config or ServeConfig()
        self.embodiment = embodiment
        self.chunked = chunked
        self.features = features = policy.metadata.features
        self.mapping = wire.mapping_from_config(embodiment)
        self.converter = wire.ActionConverter(embodiment, self.mapping, features)
        ratio = self.mapping.step_s / features.action_dt_s
        stride = round(ratio)
        if stride < 1 or abs(ratio - stride) > 1e-6 * ratio or stride >= features.chunk_size:
            raise ConfigError(f"step_s {self.mapping.step_s:g} s must be a whole number of the policy's action "
                              f"periods ({features.action_dt_s:g} s) and shorter than its chunk "
                              f"({features.chunk_size} actions)", source=embodiment.source,
                              key="policy_servers.openvla.step_s")
        self.steps = list(range(stride, features.chunk_size, stride)) if chunked else [stride]
        self._camera_key = {c.name: c.policy_key for c in embodiment.cameras}
        self._batcher: InferenceBatcher | None = None
        self.port: int | None = None
        self.requests_served = 0
        self._count_lock = threading.Lock()

    @property
    def url(self) -> str:
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"openvla+http://{host}:{self.port if self.port is not None else self.config.port}"

    def serve_until(self, stop: threading.Event, *, on_listening=None) -> None:
        """Listen until `stop` is set; `on_listening(port)` once bound."""
        handler = type("Handler", (_Handler,), {"server_state": self})
        try:
            httpd = _HttpServer((self.config.host, self.config.port), handler)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror or exc}; "
                              "choose another --port or stop the process using it") from exc
        warning = exposure_warning(self.config.host, token=self.config.token)
        if warning:
            logger.warning(warning)
        self._batcher = InferenceBatcher(self.policy, self.config.batch)
        self.port = httpd.server_address[1]
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
                                  name="vla_ros_openvla_http")
        thread.start()
        try:
            if on_listening is not None:
                on_listening(self.port)
            stop.wait()
        finally:
            httpd.shutdown()
            httpd.close_connections()
            httpd.server_close()
            self._batcher.close()

    # -- one request -----------------------------------------------------------------------------------------------

    def parse(self, body: bytes) -> tuple[PolicyObservation, bool]:
        """(the policy observation, whether the request was 'encoded'); ObservationError on a malformed one."""
        try:
            payload = wire.loads(body, source="client")
            encoded = isinstance(payload, Mapping) and "encoded" in payload
            if encoded:
                if len(payload) != 1 or not isinstance(payload["encoded"], str):
                    raise ObservationError("an 'encoded' request carries only 'encoded', a JSON string")
                payload = wire.loads(payload["encoded"], source="client")
        except PolicyError as exc:
            raise ObservationError(str(exc)) from None
        return self._observation(payload), encoded

    def act(self, observation: PolicyObservation, *, encoded: bool, client: Any = None) -> Any:
        """The reply body for a parsed request (raises whatever the policy raises)."""
        actions, _ = self._batcher.submit(observation, client=client).result()
        state = self.converter.adapter.state_from_policy(observation[STATE])
        reply = self.converter.from_chunk(actions, state, self.steps).astype(np.float32)
        body = list(reply) if self.chunked else reply[0]
        with self._count_lock:
            self.requests_served += 1
        return wire.dumps(body) if encoded else body

    def _observation(self, payload: Any) -> PolicyObservation:
        if not isinstance(payload, Mapping):
            raise ObservationError(f"a request must be a JSON object, got {type(payload).__name__}")
        instruction = payload.get("instruction")
        if not isinstance(instruction, str):
            raise ObservationError(f"'instruction' must be a string, got {type(instruction).__name__}")
        main = payload.get("image", payload.get("full_image"))
        if main is None:
            raise ObservationError("'image' (OpenVLA) or 'full_image' (OpenVLA-OFT) is missing")
        images = {self.mapping.camera: ("image" if "image" in payload else "full_image", main)}
        for key, camera in self.mapping.wrist_cameras.items():
            images[camera] = (key, payload.get(key))
        state = payload.get("state")
        features = self.features
        policy_state = np.zeros(features.state_dim, dtype=np.float32)
        n = len(self.embodiment.joints)
        if state is not None:
            if not isinstance(state, np.ndarray) or state.shape != (n,) or state.dtype.kind not in "iuf":
                got = f"{state.dtype} {state.shape}" if isinstance(state, np.ndarray) else type(state).__name__
                raise ObservationError(f"'state' must be the robot's {n} joints in policy units, got {got}")
            policy_state[:n] = state
        else:
            raise ObservationError(f"'state' is missing: this server's policy reads the robot's {n} joints (policy "
                                   "units); send them as 'state' (OpenVLA-OFT's proprio key)")
        observation: PolicyObservation = {STATE: policy_state, TASK: instruction}
        for camera_key in features.camera_keys:
            camera = next((name for name, key in self._camera_key.items() if key == camera_key), None)
            key, image = images.get(camera, (None, None))
            if image is None:
                shape = features.image_size or self.mapping.image_size
                observation[image_key(camera_key)] = np.zeros((*shape, 3), dtype=np.uint8)
                observation[image_mask_key(camera_key)] = False
                continue
            if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3
                    or min(image.shape[:2]) == 0):
                got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
                raise ObservationError(f"'{key}' must be an (H, W, 3) uint8 image, got {got}")
            if features.image_size is not None:
                image = resize_with_pad(image, features.image_size, padding=features.image_padding)
            observation[image_key(camera_key)], observation[image_mask_key(camera_key)] = image, True
        return observation


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request, client_address) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End the kept-alive connections too: a stopped server must look stopped to its clients."""
        with self._open_lock:
            for sock in self._open:
                with contextlib.suppress(OSError):  # already closed by the peer
                    sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a robot reuses its connection
    server_state: OpenVlaServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.split("?")[0] == HEALTH_PATH:
            return self._send(http.HTTPStatus.OK, "OK\n", content_type="text/plain")
        self._error(http.HTTPStatus.NOT_FOUND, f"no such path {self.path!r}: POST {wire.ACT_PATH}")

    def do_POST(self) -> None:  # noqa: N802
        state = self.server_state
        config = state.config
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            return self._error(http.HTTPStatus.LENGTH_REQUIRED, "a request needs a Content-Length")
        if int(length) > config.max_message_bytes:
            self.close_connection = True
            if int(length) <= 4 * config.max_message_bytes:  # drained unread, so that the client hears why
                remaining = int(length)
                while remaining > 0:
                    chunk = self.rfile.read(min(2**16, remaining))
                    if not chunk:
                        break
                    remaining -= len(chunk)
            return self._error(http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"request of {int(length) / 2**20:.1f} MB exceeds the server's limit of "
                               f"{config.max_message_bytes / 2**20:.1f} MB (--max-message-mb)")
        body = self.rfile.read(int(length))
        if self.path.split("?")[0] != wire.ACT_PATH:
            return self._error(http.HTTPStatus.NOT_FOUND, f"no such path {self.path!r}: POST {wire.ACT_PATH}")
        if config.token is not None and not self._authorized(config.token):
            logger.warning("refused %s: missing or wrong token", self.address_string())
            return self._error(http.HTTPStatus.UNAUTHORIZED, "missing or wrong token (Authorization: Bearer <token>, "
                                                             "VLA_ROS_SERVE_TOKEN)")
        started = time.perf_counter()
        try:
            observation, encoded = state.parse(body)
        except ObservationError as exc:
            return self._error(http.HTTPStatus.BAD_REQUEST, f"invalid request: {exc}")
        except Exception as exc:  # noqa: BLE001 - a request nobody foresaw: answered, and the server goes on
            logger.warning("a request from %s failed unexpectedly", self.address_string(), exc_info=exc)
            return self._error(http.HTTPStatus.BAD_REQUEST, f"invalid request ({type(exc).__name__}: {exc})")
        try:
            reply = state.act(observation, encoded=encoded, client=self.client_address)
        except Exception as exc:  # noqa: BLE001 - any policy failure goes back to the client, which holds its arm
            logger.error("policy failed on a request from %s", self.address_string(), exc_info=exc)
            return self._error(http.HTTPStatus.INTERNAL_SERVER_ERROR, f"policy failed: {type(exc).__name__}: {exc}")
        self._send(http.HTTPStatus.OK, wire.dumps(reply),
                   extra={"X-Server-Time-Ms": f"{(time.perf_counter() - started) * 1e3:.2f}"})

    def _authorized(self, token: str) -> bool:
        scheme, _, credential = (self.headers.get("Authorization") or "").strip().partition(" ")
        return scheme.lower() in AUTH_SCHEMES and hmac.compare_digest(credential.strip().encode(), token.encode())

    def _error(self, status: http.HTTPStatus, message: str) -> None:
        self._send(status, json.dumps({"error": message}))

    def _send(self, status: http.HTTPStatus, text: str, *, content_type: str = "application/json",
              extra: Mapping[str, str] | None = None) -> None:
        data = text.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
