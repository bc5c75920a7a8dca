"""A policy on an OpenVLA or OpenVLA-OFT server (`openvla+http://host:port`): their own deploy.py, or `vla-ros serve
--protocol openvla`. The wire format and the robot's mapping (`policy_servers.openvla`) are in openvla_protocol.py.

Whether the server answers one action (OpenVLA) or a chunk (OpenVLA-OFT) is learned at start-up from its answer
to one example observation (not executed). Each reply becomes a chunk that starts at the observed state and
reaches action i at (i + 1) * step_s, so the scheduler, the safety filter and the controllers treat it like any
policy's chunk; end-effector actions become joint targets through the robot's inverse kinematics first.
While the server is away, `predict_chunk` raises PolicyError at once (the arm holds) and a background thread
probes it with capped, jittered exponential backoff (reconnect.py).
"""

from __future__ import annotations

import http.client
import logging
import os
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import ConfigError, PolicyError
from vla_ros.core.features import STATE, TASK, PolicyFeatures, PolicyObservation, image_key
from vla_ros.policies.base import ChunkPrefix, Policy, PolicyMetadata
from vla_ros.policies.factory import PolicyOptions
from vla_ros.policies.remote import TOKEN_ENV
from vla_ros.policies.remote import openvla_protocol as wire
from vla_ros.policies.remote.client import RemoteConfig, backoff_delays
from vla_ros.policies.remote.reconnect import ServerWatch, WatchedServerClient

logger = logging.getLogger("vla_ros.remote")


class OpenVlaRemotePolicy(WatchedServerClient, Policy):
    """Predicts chunks on an OpenVLA(-OFT) server; see the module docstring."""

    def __init__(self, url: str, *, embodiment: EmbodimentConfig, token: str | None = None,
                 config: RemoteConfig | None = None):
        self.config = config = config or RemoteConfig()
        parts = urlsplit(url)
        if parts.scheme != "openvla+http" or not parts.hostname or parts.port is None:
            raise ConfigError(f"OpenVLA server address '{url}' must look like openvla+http://host:port (OpenVLA's "
                              "deploy.py listens on 8000, OpenVLA-OFT's on 8777)")
        self.url = url
        self._host, self._port = parts.hostname, parts.port
        self._embodiment = embodiment
        self.mapping = wire.mapping_from_config(embodiment)  # refuses robots without a mapping, naming what is missing
        n = len(embodiment.joints)
        self._camera_key = {c.name: c.policy_key for c in embodiment.cameras}
        cameras = (self.mapping.camera, *self.mapping.wrist_cameras.values())
        self._features = PolicyFeatures(state_dim=n, action_dim=n, chunk_size=2, action_dt_s=self.mapping.step_s,
                                        camera_keys=tuple(self._camera_key[c] for c in cameras),
                                        image_size=self.mapping.image_size)
        self.converter = wire.ActionConverter(embodiment, self.mapping, self._features)
        self._headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
        self._connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()  # one request at a time on the connection
        self._watch = ServerWatch(f"OpenVLA server {url}", config, self._probe_port)
        self.last_server_time_ms: float | None = None
        try:
            horizon = self._probe()
        except BaseException:
            self._drop_connection()
            raise
        features = replace(self._features, chunk_size=horizon + 1)
        self.metadata = PolicyMetadata(
            name="openvla",
            features=features,
            description=(f"OpenVLA server at {url} ({'one action' if horizon == 1 else f'{horizon}-action chunks'} "
                         f"per reply, {self.mapping.action_space} every {self.mapping.step_s:g} s)"),
            device=url,
            dtype="unknown",
        )
        self._watch.start()

    # -- Policy ----------------------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None) -> None:
        """Nothing to do: OpenVLA's protocol has no episodes."""

    def predict_chunk(self, observation: PolicyObservation, prefix: ChunkPrefix | None = None) -> np.ndarray:
        self._require_connection()
        actions = self._act(observation)
        expected = self.metadata.features.chunk_size - 1
        if len(actions) != expected:
            raise PolicyError(f"OpenVLA server {self.url} sent {len(actions)} action(s), {expected} at start-up")
        state = self.converter.adapter.state_from_policy(observation[STATE])
        return self.converter.to_chunk(actions, state).astype(np.float32)

    def close(self) -> None:
        self._watch.close(timeout_s=self.config.request_timeout_s + 2.0)
        with self._lock:
            self._drop_connection()

    # -- requests --------------------------------------------------------------------------------------------------

    def _request(self, observation: PolicyObservation) -> dict:
        main = observation[image_key(self._camera_key[self.mapping.camera])]
        message: dict[str, Any] = {"instruction": str(observation.get(TASK, "")),
                                   "state": np.asarray(observation[STATE], dtype=np.float32)}
        message["image" if self.mapping.request == "openvla" else "full_image"] = main
        for key, camera in self.mapping.wrist_cameras.items():
            message[key] = observation[image_key(self._camera_key[camera])]
        if self.mapping.unnorm_key is not None:
            message["unnorm_key"] = self.mapping.unnorm_key
        return message

    def _act(self, observation: PolicyObservation) -> np.ndarray:
        """The (K, width) actions of the server's reply to `observation`."""
        body = wire.dumps(self._request(observation)).encode()
        status, text = self._post(body)
        source = f"OpenVLA server {self.url}"
        if status != 200:
            message = _error_text(text)
            if status == 401:
                raise PolicyError(f"{source} refused the request ({message}): give its token with {TOKEN_ENV} or "
                                  "the policy options")
            raise PolicyError(f"{source} failed on this observation (HTTP {status}): {message}")
        reply = wire.loads(text, source=source)
        if isinstance(reply, str):  # OpenVLA's "error", or an 'encoded' reply
            if reply == wire.ERROR_REPLY:
                raise PolicyError(f"{source} answered \"error\": its log says why (request keys: "
                                  f"{sorted(self._request(observation))})")
            reply = wire.loads(reply, source=source)
        actions = np.asarray(reply if isinstance(reply, np.ndarray) else _stack(reply, source), dtype=np.float64)
        if actions.ndim == 1:
            actions = actions[None]
        width = self.converter.action_width
        if actions.ndim != 2 or actions.shape[1] != width or len(actions) == 0:
            raise PolicyError(f"{source} sent actions of shape {actions.shape}, expected ({width},) or (K, {width}) "
                              f"for action_space {self.mapping.action_space} of robot '{self._embodiment.robot}'")
        if not np.isfinite(actions).all():
            raise PolicyError(f"{source} sent non-finite actions")
        return actions

    def _post(self, body: bytes) -> tuple[int, bytes]:
        with self._lock:
            for attempt in (0, 1):  # a kept-alive connection the server closed meanwhile is retried once
                if self._connection is None:
                    self._connection = http.client.HTTPConnection(self._host, self._port,
                                                                  timeout=self.config.request_timeout_s)
                try:
                    self._connection.request("POST", wire.ACT_PATH, body=body, headers=self._headers)
                    response = self._connection.getresponse()
                    text = response.read(self.config.max_reply_bytes + 1)
                    if len(text) > self.config.max_reply_bytes:
                        raise PolicyError(f"OpenVLA server {self.url} sent a reply over "
                                          f"{self.config.max_reply_bytes / 2**20:.0f} MB")
                    server_ms = response.getheader("X-Server-Time-Ms")
                    self.last_server_time_ms = float(server_ms) if server_ms else None
                    if response.getheader("Connection", "").lower() == "close":
                        self._drop_connection()
                    return response.status, text
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                    self._drop_connection()
                    if attempt:
                        self._watch.mark_down(f"{type(exc).__name__}: {exc}")
                        raise PolicyError(self.status_message()) from None
                except (TimeoutError, OSError, http.client.HTTPException) as exc:
                    self._drop_connection()
                    reason = (f"no reply within {self.config.request_timeout_s:g} s" if isinstance(exc, TimeoutError)
                              else f"{type(exc).__name__}: {exc}")
                    self._watch.mark_down(reason)
                    raise PolicyError(f"OpenVLA server {self.url}: {reason}; the arm holds while it reconnects") \
                        from None
        raise AssertionError("unreachable")

    def _drop_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _probe(self) -> int:
        """Actions per reply, from the answer to an example observation (not executed)."""
        deadline = time.monotonic() + self.config.connect_timeout_s
        delays = backoff_delays(self.config, random.Random())
        example = {STATE: self.converter.adapter.state_to_policy(self._embodiment.home), TASK: "probe"}
        for key in self._features.camera_keys:
            example[image_key(key)] = np.zeros((*self.mapping.image_size, 3), dtype=np.uint8)
        while True:
            try:
                return len(self._act(example))
            except PolicyError as exc:
                if self.connected or time.monotonic() + self.config.retry_initial_s > deadline:
                    raise PolicyError(f"OpenVLA server {self.url} did not answer an example observation: {exc}. "
                                      "Start it (OpenVLA's vla-scripts/deploy.py, or `vla-ros serve --protocol "
                                      "openvla --policy <spec> --robot <name> --port <port>`) and check the host "
                                      "and port") from None
                self._watch.mark_up()
                time.sleep(min(next(delays), max(0.0, deadline - time.monotonic())))

    def _probe_port(self) -> None:
        """Any HTTP answer on the port means the server is back (OpenVLA's own has no health endpoint)."""
        probe = http.client.HTTPConnection(self._host, self._port, timeout=self.config.request_timeout_s)
        try:
            probe.request("GET", "/healthz")
            probe.getresponse().read()
        finally:
            probe.close()


def _stack(reply: Any, source: str) -> np.ndarray:
    if not isinstance(reply, list) or not reply or not all(isinstance(a, np.ndarray) for a in reply):
        raise PolicyError(f"{source} replied {type(reply).__name__}, expected an action array or a list of them")
    return np.stack(reply)


def _error_text(text: bytes) -> str:
    try:
        message = wire.loads(text)
    except PolicyError:
        return text[:200].decode("utf-8", "replace")
    return str(message.get("error", message)) if isinstance(message, Mapping) else str(message)


def connect_openvla(spec: str, *, embodiment: EmbodimentConfig, options: PolicyOptions) -> Policy:
    """The factory's loader for `openvla+http://host:port` specs."""
    token = options.token or os.environ.get(TOKEN_ENV) or None
    return OpenVlaRemotePolicy(spec, embodiment=embodiment, token=token)
