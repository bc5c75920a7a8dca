"""A policy on a remote server speaking openpi's websocket protocol (`vla-ros serve`, or any openpi server).

The connection lives in a background thread that reconnects with capped, jittered exponential backoff.
While it is down, `predict_chunk` raises PolicyError at once with a message for the operator: the caller's
pipeline holds the arm (ActionPipeline.chunk_failed) and asks again on a later tick.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import numpy as np

from vla_ros.core.adapter import EmbodimentAdapter
from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import ConfigError, PolicyError
from vla_ros.core.features import PolicyFeatures, PolicyObservation
from vla_ros.policies.base import ChunkPrefix, Policy, PolicyMetadata
from vla_ros.policies.factory import PolicyOptions
from vla_ros.policies.remote import protocol

logger = logging.getLogger("vla_ros.remote")

OPENPI_IMAGE_SIZE = (224, 224)  # what openpi clients send when a server does not say (its pi0 models' input)


@dataclass(frozen=True)
class RemoteConfig:
    connect_timeout_s: float = 10.0  # at start-up: how long to wait for the server before giving up
    request_timeout_s: float = 10.0  # longest wait for one chunk; then the connection is dropped and remade
    retry_initial_s: float = 0.2  # first reconnection delay, doubled on each failure ...
    retry_max_s: float = 5.0  # ... up to this
    retry_jitter: float = 0.25  # each delay is shortened by up to this fraction, so that robots do not retry in step
    max_reply_bytes: int = 16 * 2**20

    def __post_init__(self) -> None:
        for name in ("connect_timeout_s", "request_timeout_s", "retry_initial_s", "retry_max_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 s, got {getattr(self, name)}", key=name)
        if self.retry_max_s < self.retry_initial_s:
            raise ConfigError(f"retry_max_s ({self.retry_max_s}) must be >= retry_initial_s ({self.retry_initial_s})",
                              key="retry_max_s")
        if not 0 <= self.retry_jitter < 1:
            raise ConfigError(f"retry_jitter must be in [0, 1), got {self.retry_jitter}", key="retry_jitter")


def backoff_delays(config: RemoteConfig, rng: random.Random) -> Iterator[float]:
    """Reconnection delays in s: doubling from retry_initial_s, capped at retry_max_s, each jittered downwards."""
    delay = config.retry_initial_s
    while True:
        yield delay * (1.0 - config.retry_jitter * rng.random())
        delay = min(delay * 2.0, config.retry_max_s)


class RemotePolicy(Policy):
    """Predicts chunks on a policy server; see the module docstring for what happens when it goes away."""

    def __init__(self, url: str, *, embodiment: EmbodimentConfig, token: str | None = None,
                 config: RemoteConfig = RemoteConfig()):
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ConfigError(f"policy server address '{url}' must look like ws://host:port or wss://host:port")
        self._websockets = protocol.import_websockets()
        self.url = url
        self.config = config
        self._embodiment = embodiment
        self._headers = {"Authorization": f"Api-Key {token}"} if token else None  # openpi-client's header
        self._lock = threading.Lock()  # guards the connection state below
        self._request_lock = threading.Lock()  # the protocol has no request ids: one exchange at a time
        self._connection = None  # the live websocket, None while down
        self._server_metadata: dict | None = None  # from the first connection; later ones must agree
        self._down_since: float | None = time.time()
        self._last_error = "not connected yet"
        self._retry_delay_s = config.retry_initial_s
        self._refused = False  # the server rejected our token: waiting longer will not help
        self._connected = threading.Event()
        self._drop = threading.Event()  # ask the connection thread to close the current connection and reconnect
        self._closed = threading.Event()
        self.last_server_timing: Mapping[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="vla_ros_remote_policy", daemon=True)
        self._thread.start()
        try:
            self._wait_for_first_connection()
            self.metadata = self._metadata_from_server(self._server_metadata)
        except BaseException:
            self.close()
            raise

    # -- Policy ----------------------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None) -> None:
        """Nothing to do here: openpi's protocol carries no reset, and the server's policy is per request."""

    def predict_chunk(self, observation: PolicyObservation, prefix: ChunkPrefix | None = None) -> np.ndarray:
        actions = self._exchange(observation)
        features = self.metadata.features
        if actions.shape != (features.chunk_size, features.action_dim):
            raise PolicyError(f"policy server {self.url} sent actions of shape {actions.shape}, its metadata "
                              f"promised ({features.chunk_size}, {features.action_dim})")
        if not np.isfinite(actions).all():
            raise PolicyError(f"policy server {self.url} sent non-finite actions")
        return actions

    def close(self) -> None:
        self._closed.set()
        self._drop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.config.request_timeout_s + 2.0)

    # -- status ----------------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connection is not None

    def status_message(self) -> str:
        """One line for the operator: connected, or since when and why not, and when it retries."""
        with self._lock:
            if self._connection is not None:
                return f"connected to policy server {self.url}"
            since = self._down_since or time.time()
            return (f"policy server {self.url} unreachable since {time.strftime('%H:%M:%S', time.localtime(since))} "
                    f"({time.time() - since:.1f} s; {self._last_error}); the arm holds; retrying every "
                    f"{self._retry_delay_s:.1f} s (backing off to {self.config.retry_max_s:g} s)")

    # -- one request -----------------------------------------------------------------------------------------------

    def _exchange(self, observation: PolicyObservation) -> np.ndarray:
        payload = protocol.pack(protocol.observation_to_wire(observation))
        limit = (self._server_metadata or {}).get("max_message_bytes")
        if isinstance(limit, int) and len(payload) > limit:
            raise PolicyError(f"observation of {len(payload) / 2**20:.1f} MB exceeds policy server {self.url}'s "
                              f"limit of {limit / 2**20:.1f} MB: send smaller images, or restart the server with a "
                              "larger --max-message-mb")
        closed_error = self._websockets.exceptions.ConnectionClosed
        with self._request_lock:
            with self._lock:
                connection = self._connection
            if connection is None:
                raise PolicyError(self.status_message())
            try:
                connection.send(payload)
                reply = connection.recv(timeout=self.config.request_timeout_s)
            except TimeoutError:
                # A late reply would answer the next request: this connection cannot be trusted any more.
                self._discard(connection, f"no reply within {self.config.request_timeout_s:g} s")
                raise PolicyError(f"policy server {self.url} sent no chunk within {self.config.request_timeout_s:g}"
                                  " s; reconnecting (the arm holds)") from None
            except closed_error as exc:
                reason = _describe_close(exc, sent_bytes=len(payload))
                self._discard(connection, reason)
                raise PolicyError(f"policy server {self.url} closed the connection: {reason}; the arm holds "
                                  "while it reconnects") from None
        if isinstance(reply, str):  # openpi's convention: an error as text, then the server closes
            self._discard(connection, "the server failed on the last observation")
            raise PolicyError(f"policy server {self.url} failed on this observation:\n{reply.rstrip()}")
        message = protocol.unpack(reply, source=f"policy server {self.url}")
        actions = protocol.actions_from_wire(message, source=f"policy server {self.url}")
        timing = message.get(protocol.SERVER_TIMING)
        self.last_server_timing = dict(timing) if isinstance(timing, Mapping) else {}
        return actions

    def _discard(self, connection, reason: str) -> None:
        with self._lock:
            if self._connection is connection:
                self._mark_down(reason)
                self._drop.set()

    def _mark_down(self, reason: str) -> None:  # call with self._lock held
        if (self._connection is not None or self._down_since is None) and not self._closed.is_set():
            self._down_since = time.time()
            logger.warning("policy server %s: connection lost (%s); the arm holds while it reconnects",
                           self.url, reason)
        self._connection = None
        self._connected.clear()
        self._last_error = reason

    # -- the connection thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        rng = random.Random()
        delays = backoff_delays(self.config, rng)
        while not self._closed.is_set():
            try:
                if self._hold_connection():
                    delays = backoff_delays(self.config, rng)  # it worked for a while: start the backoff afresh
            except Exception as exc:  # noqa: BLE001 - every failure is retried; the reason goes to the operator
                with self._lock:
                    self._mark_down(self._describe_failure(exc))
            delay = next(delays)
            with self._lock:
                self._retry_delay_s = delay
                logger.debug("policy server %s: %s; retrying in %.2f s", self.url, self._last_error, delay)
            self._closed.wait(delay)

    def _hold_connection(self) -> bool:
        """Connect, check the metadata, publish the connection until it closes. True if it was ever published."""
        ws = self._websockets
        with ws.sync.client.connect(
            self.url, additional_headers=self._headers, compression=None, max_size=self.config.max_reply_bytes,
            open_timeout=self.config.connect_timeout_s, close_timeout=1.0,
            ping_interval=5.0, ping_timeout=self.config.request_timeout_s,
        ) as connection:
            metadata = protocol.unpack(connection.recv(timeout=self.config.connect_timeout_s),
                                       source=f"policy server {self.url}")
            self._check_same_server(metadata)
            self._drop.clear()
            logger.info("policy server %s: connected", self.url)
            with self._lock:
                self._connection = connection
                self._down_since = None
                self._connected.set()
            open_state = ws.protocol.State.OPEN
            while (not self._closed.is_set() and not self._drop.wait(0.05)
                   and connection.protocol.state is open_state):
                pass
            with self._lock:
                if self._connection is connection:
                    self._mark_down(_describe_close(connection.protocol.close_exc, sent_bytes=None)
                                    if connection.protocol.state is not open_state else "closed by the client")
        return True

    def _check_same_server(self, metadata) -> None:
        source = f"policy server {self.url}"
        features = protocol.features_from_wire(metadata, source=source)
        if self._server_metadata is None:
            self._server_metadata = metadata
            return
        before = protocol.features_from_wire(self._server_metadata, source=source)
        if features != before or metadata.get("name") != self._server_metadata.get("name"):
            raise PolicyError(f"{source} now serves a different policy ({metadata.get('name')!r}, {features}) than "
                              f"at start-up ({self._server_metadata.get('name')!r}, {before}): not using it; restart "
                              "this node to switch policies")

    def _describe_failure(self, exc: Exception) -> str:
        ws = self._websockets
        if isinstance(exc, ws.exceptions.ConnectionClosed):
            frame = exc.rcvd
            if frame is not None and frame.code == 1008:
                self._refused = True
                return (f"the server refused the connection ({frame.reason}): give its token with "
                        f"{protocol.TOKEN_ENV} or the policy options")
            return _describe_close(exc, sent_bytes=None)
        if isinstance(exc, ws.exceptions.InvalidStatus):
            return f"HTTP {exc.response.status_code} instead of a websocket: is {self.url} a policy server?"
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused (is `vla-ros serve` running on that port?)"
        return f"{type(exc).__name__}: {exc}"

    def _wait_for_first_connection(self) -> None:
        deadline = time.monotonic() + self.config.connect_timeout_s
        while not self._connected.wait(0.05):
            if self._refused or time.monotonic() > deadline:
                with self._lock:
                    reason = self._last_error
                raise PolicyError(f"policy server {self.url} unreachable: {reason}. Start it with `vla-ros serve "
                                  "--policy <spec> --robot <name> --port <port>` and check the host and port")

    # -- what the server serves ------------------------------------------------------------------------------------

    def _metadata_from_server(self, server: dict) -> PolicyMetadata:
        source = f"policy server {self.url}"
        features = protocol.features_from_wire(server, source=source)
        if features is None:
            features = self._probe_features()
        try:
            EmbodimentAdapter(self._embodiment, features)  # the width checks every backend gets at load time
        except ConfigError as exc:
            raise PolicyError(f"{source} cannot drive robot '{self._embodiment.robot}': {exc}") from None
        robot_keys = {c.policy_key for c in self._embodiment.cameras}
        missing = [key for key in features.camera_keys if key not in robot_keys]
        if missing:
            logger.warning("%s reads cameras %s that robot '%s' lacks: they are sent as zeros, masked out",
                           source, missing, self._embodiment.robot)
        if server.get("robot") not in (None, self._embodiment.robot):
            logger.warning("%s built its policy for robot '%s', this is '%s': check that units and rates agree",
                           source, server.get("robot"), self._embodiment.robot)
        name = str(server.get("name", "openpi"))
        return PolicyMetadata(
            name="remote",
            features=features,
            description=f"'{name}' served at {self.url}" + (f": {server['description']}"
                                                            if server.get("description") else ""),
            learned=bool(server.get("learned", True)),
            normalization={str(k): str(v) for k, v in (server.get("normalization") or {}).items()},
            device=f"{self.url} ({server.get('device', 'unknown device')})",
            dtype=str(server.get("dtype", "unknown")),
            load_time_s=float(server.get("load_time_s", 0.0) or 0.0),
            supports_prefix=False,
        )

    def _probe_features(self) -> PolicyFeatures:
        """Features of a server whose metadata has none (a plain openpi server): the robot's joints and cameras,
        openpi's 224x224 images, and the chunk shape of the reply to one example observation (not executed)."""
        n = len(self._embodiment.joints)
        guess = PolicyFeatures(state_dim=n, action_dim=n, chunk_size=1, action_dt_s=self._embodiment.control_period_s,
                               camera_keys=tuple(c.policy_key for c in self._embodiment.cameras),
                               image_size=OPENPI_IMAGE_SIZE)
        batch, _ = EmbodimentAdapter(self._embodiment, guess).to_policy_observation(
            self._embodiment.example_observation())
        try:
            actions = self._exchange(batch)
        except PolicyError as exc:
            raise PolicyError(f"policy server {self.url} sent no vla_ros features in its metadata, and did not "
                              f"answer an observation with LeRobot keys ({exc}); serve the policy with `vla-ros "
                              "serve`, or give the server those keys") from None
        logger.info("policy server %s has no vla_ros metadata: chunks of %d x %d at the robot's control rate",
                    self.url, *actions.shape)
        return replace(guess, chunk_size=actions.shape[0], action_dim=actions.shape[1])


def _describe_close(exc, *, sent_bytes: int | None) -> str:
    frame = None if exc is None else exc.rcvd or exc.sent
    if frame is None:
        return "connection lost"
    if frame.code == 1009:
        size = f" (this observation: {sent_bytes / 2**20:.1f} MB)" if sent_bytes else ""
        return f"message too big for the server's --max-message-mb{size}"
    if frame.code == 1001:
        return "the server is shutting down"
    return f"closed with code {frame.code}" + (f" ({frame.reason})" if frame.reason else "")


def connect_policy(spec: str, *, embodiment: EmbodimentConfig, options: PolicyOptions) -> Policy:
    """The factory's loader for `ws://host:port` and `wss://host:port` specs."""
    token = options.token or os.environ.get(protocol.TOKEN_ENV) or None
    return RemotePolicy(spec, embodiment=embodiment, token=token)
