"""A policy on an Isaac-GR00T policy server (`gr00t://host:port`): Isaac-GR00T's own, or `vla-ros serve
--protocol gr00t`. The wire format and the robot layout are in gr00t_protocol.py.

ZMQ's REQ socket cannot take a second request before the first reply, so a request that times out discards its
socket (ZMQ's "lazy pirate" pattern). While the server is away, `predict_chunk` raises PolicyError at once (the
pipeline holds the arm) and a background thread pings it with capped, jittered exponential backoff; on its return
the server's modality config must be the one seen at start-up (reconnect.py).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from vla_ros.core.adapter import EmbodimentAdapter
from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import ConfigError, PolicyError
from vla_ros.core.features import STATE, TASK, PolicyFeatures, PolicyObservation, image_key
from vla_ros.policies.base import ChunkPrefix, Policy, PolicyMetadata
from vla_ros.policies.factory import PolicyOptions
from vla_ros.policies.remote import TOKEN_ENV
from vla_ros.policies.remote import gr00t_protocol as wire
from vla_ros.policies.remote.client import RemoteConfig, backoff_delays
from vla_ros.policies.remote.gr00t_server import import_zmq
from vla_ros.policies.remote.reconnect import ServerWatch, WatchedServerClient

logger = logging.getLogger("vla_ros.remote")


class ServerError(PolicyError):
    """The server answered {"error": ...}."""


class NoReply(PolicyError):
    """The server did not answer in time; `reason` says so in a few words."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class Gr00tRemotePolicy(WatchedServerClient, Policy):
    """Predicts chunks on a GR00T policy server; state and action parts are in the robot's policy units."""

    def __init__(self, url: str, *, embodiment: EmbodimentConfig, token: str | None = None,
                 config: RemoteConfig | None = None):
        config = config or RemoteConfig()
        parts = urlsplit(url)
        if parts.scheme != "gr00t" or not parts.hostname or parts.port is None:
            raise ConfigError(f"GR00T policy server address '{url}' must look like gr00t://host:port "
                              f"(Isaac-GR00T's default port is {wire.DEFAULT_PORT})")
        self._zmq = import_zmq()
        self.url = url
        self._endpoint = f"tcp://{parts.hostname if ':' not in parts.hostname else f'[{parts.hostname}]'}:{parts.port}"
        self.config = config
        self._embodiment = embodiment
        self._token = token
        self._context = self._zmq.Context()
        self._socket = None
        self._socket_lock = threading.Lock()  # one request at a time on the REQ socket
        self._watch = ServerWatch(f"GR00T policy server {url}", config, self._probe)
        self.last_server_timing: Mapping[str, float] = {}
        try:
            self._configs = self._first_contact()
            self._setup(self._configs)
        except BaseException:
            self._close_socket()
            self._context.term()
            raise
        self._watch.start()

    # -- Policy ----------------------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None) -> None:
        """Tell the server an episode starts (N1.6's `reset`; `vla-ros serve` reseeds its policy with `seed`). Best
        effort: a server without it (N1.5), or away, is fine."""
        if not self.connected or self.dialect == "n1.5":  # N1.5's server has no reset endpoint
            return
        try:
            self._call("reset", {"options": None if seed is None else {"seed": int(seed)}})
        except PolicyError as exc:
            logger.info("policy server %s: reset not done (%s)", self.url, exc)

    def predict_chunk(self, observation: PolicyObservation, prefix: ChunkPrefix | None = None) -> np.ndarray:
        self._require_connection()
        reply = self._call("get_action", self._request(observation))
        return self._assemble(reply)

    def close(self) -> None:
        self._watch.close(timeout_s=self.config.request_timeout_s + 2.0)
        with self._socket_lock:
            self._close_socket()
        self._context.term()

    # -- messages --------------------------------------------------------------------------------------------------

    def _request(self, observation: PolicyObservation) -> dict:
        nested = self.dialect == "n1.6"
        batch_axis = self.dialect != "n1.5"

        def lift(value: np.ndarray) -> np.ndarray:  # add the time axis, and the batch axis where the dialect has one
            value = value[None]
            return value[None] if batch_axis else value

        video = {key: lift(np.ascontiguousarray(observation[image_key(self._camera_key[camera])]))
                 for key, camera in self._layout.video.items()}
        state_vector = np.asarray(observation[STATE], dtype=np.float32)
        state = {key: lift(state_vector[index]) for key, index in self._state_index.items()}
        task = str(observation.get(TASK, ""))
        if nested:
            return {"observation": {"video": video, "state": state, "language": {self._layout.language: [[task]]}},
                    "options": None}
        flat: dict[str, Any] = {f"video.{k}": v for k, v in video.items()} | {f"state.{k}": v for k, v in state.items()}
        flat[self._layout.language] = [task]
        return flat

    def _assemble(self, reply: Any) -> np.ndarray:
        source = f"GR00T policy server {self.url}"
        if self.dialect != "n1.5":
            if not isinstance(reply, list) or len(reply) != 2 or not isinstance(reply[0], Mapping):
                raise PolicyError(f"{source} answered get_action with {type(reply).__name__}, expected [actions, info]")
            actions, info = reply
            timing = info.get("server_timing") if isinstance(info, Mapping) else None
            self.last_server_timing = dict(timing) if isinstance(timing, Mapping) else {}
        else:
            actions = reply
        if not isinstance(actions, Mapping):
            raise PolicyError(f"{source} answered get_action with {type(actions).__name__}, expected a map of parts")
        parts = {wire.strip_prefix(str(key), "action"): value for key, value in actions.items()}
        horizon = self.metadata.features.chunk_size
        chunk = np.zeros((horizon, len(self._embodiment.joints)), dtype=np.float32)
        for key, index in self._action_index.items():
            value = parts.get(key)
            if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
                raise PolicyError(f"{source} sent no number array for action part '{key}' (got {sorted(parts)})")
            if self.dialect != "n1.5":
                if value.ndim != 3 or len(value) != 1:
                    raise PolicyError(f"{source} sent action part '{key}' of shape {value.shape}, expected (1, "
                                      f"{horizon}, {len(index)})")
                value = value[0]
            elif value.ndim == 1:  # N1.5 squeezes every one-wide axis away
                value = value.reshape(horizon, len(index)) if value.size == horizon * len(index) else value
            if value.shape != (horizon, len(index)):
                raise PolicyError(f"{source} sent action part '{key}' of shape {value.shape}, expected ({horizon}, "
                                  f"{len(index)}) ({', '.join(self._layout.action[key])})")
            chunk[:, index] = value
        if not np.isfinite(chunk).all():
            raise PolicyError(f"{source} sent non-finite actions")
        return chunk

    # -- the socket ------------------------------------------------------------------------------------------------

    def _call(self, endpoint: str, data: Any = None, *, timeout_s: float | None = None) -> Any:
        zmq = self._zmq
        request: dict[str, Any] = {"endpoint": endpoint}
        if data is not None:
            request["data"] = data
        if self._token:
            request["api_token"] = self._token
        payload = wire.pack(request)
        timeout_s = self.config.request_timeout_s if timeout_s is None else timeout_s
        with self._socket_lock:
            if self._socket is None:
                self._socket = self._context.socket(zmq.REQ)
                self._socket.setsockopt(zmq.LINGER, 0)
                self._socket.setsockopt(zmq.MAXMSGSIZE, self.config.max_reply_bytes)
                self._socket.connect(self._endpoint)
            self._socket.send(payload)
            if not self._socket.poll(int(timeout_s * 1e3), zmq.POLLIN):
                # A late reply would answer the next request: this socket cannot be trusted any more.
                self._close_socket()
                reason = f"no reply to '{endpoint}' within {timeout_s:.3g} s"
                self._watch.mark_down(reason)
                raise NoReply(f"GR00T policy server {self.url} sent {reason}; reconnecting (the arm holds)", reason)
            reply = self._socket.recv()
        if reply == b"ERROR":  # some Isaac-GR00T servers' way of failing
            raise ServerError(f"GR00T policy server {self.url} failed on '{endpoint}'")
        message = wire.unpack(reply, source=f"GR00T policy server {self.url}")
        if isinstance(message, Mapping) and "error" in message:
            raise ServerError(f"GR00T policy server {self.url} failed on '{endpoint}': {message['error']}")
        return message

    def _close_socket(self) -> None:  # call with _socket_lock held
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def _first_contact(self) -> dict[str, wire.ModalityConfig]:
        deadline = time.monotonic() + self.config.connect_timeout_s
        delays = backoff_delays(self.config, random.Random())
        while True:
            try:
                self._call("ping", timeout_s=max(0.05, min(self.config.request_timeout_s,
                                                           deadline - time.monotonic())))
                configs = self._call("get_modality_config")
                break
            except ServerError as exc:
                if "Unauthorized" in str(exc):
                    raise PolicyError(f"{exc}: give its token with {TOKEN_ENV} or the policy options") from None
                raise
            except PolicyError as exc:
                if time.monotonic() + self.config.retry_initial_s > deadline:
                    raise PolicyError(f"GR00T policy server {self.url} unreachable: {exc}. Start it (Isaac-GR00T's "
                                      "run_gr00t_server.py, or `vla-ros serve --protocol gr00t --policy <spec> "
                                      "--robot <name> --port <port>`) and check the host and port") from None
                time.sleep(min(next(delays), max(0.0, deadline - time.monotonic())))
        self._watch.mark_up()
        return wire.modality_configs_from_wire(configs, source=f"GR00T policy server {self.url}")

    def _setup(self, configs: dict[str, wire.ModalityConfig]) -> None:
        source = f"GR00T policy server {self.url}"
        n15 = configs["video"].json_string
        short = {m: wire.ModalityConfig(c.delta_indices, tuple(wire.strip_prefix(k, m) for k in c.modality_keys),
                                        c.extra) if m != "language" else c for m, c in configs.items()}
        layout = wire.layout_from_config(self._embodiment, short)
        wire.check_layout_against_server(layout, short, source=source)
        self.dialect = layout.dialect or ("n1.5" if n15 else "n1.6")
        self._layout = layout
        self._camera_key = {c.name: c.policy_key for c in self._embodiment.cameras}
        self._state_index = layout.joint_indices(self._embodiment, layout.state)
        self._action_index = layout.joint_indices(self._embodiment, layout.action)
        horizon = len(configs["action"].delta_indices)
        n = len(self._embodiment.joints)
        features = PolicyFeatures(state_dim=n, action_dim=n, chunk_size=horizon, action_dt_s=layout.action_dt_s,
                                  camera_keys=tuple(self._camera_key[c] for c in layout.video.values()),
                                  image_size=layout.image_size)
        EmbodimentAdapter(self._embodiment, features)
        self.metadata = PolicyMetadata(
            name="gr00t",
            features=features,
            description=(f"GR00T policy server at {self.url} ({self.dialect}; video {list(layout.video)}, state "
                         f"{list(layout.state)}, action {list(layout.action)} x {horizon} steps)"),
            device=self.url,
            dtype="unknown",
        )

    def _probe(self) -> None:
        """The server answers again, with the modality config it had at start-up."""
        self._call("ping")
        configs = wire.modality_configs_from_wire(self._call("get_modality_config"), source=self.url)
        if configs != self._configs:
            raise PolicyError("the server now serves another modality config than at start-up: not using it; "
                              "restart this node to switch policies")


def connect_gr00t(spec: str, *, embodiment: EmbodimentConfig, options: PolicyOptions) -> Policy:
    """The factory's loader for `gr00t://host:port` specs."""
    token = options.token or os.environ.get(TOKEN_ENV) or None
    return Gr00tRemotePolicy(spec, embodiment=embodiment, token=token)
