"""One model worker for every client of a policy server, batching concurrent requests into one forward pass.

The worker takes the oldest request, then every request already queued, then waits at most `max_wait_s` for
more while fewer requests are in hand than clients were active in the last `ACTIVE_WINDOW_S` (a lone robot never
waits; robots in step fill a batch without waiting out the bound), up to `max_batch`. Without the wait, robots
that fell out of step would take turns forever, each arriving while the other's chunk is computed.
Requests run together only where the policy has
`predict_chunks(observations) -> (B, H, A)` and their inputs have the same shapes (the same model, the same
image sizes); the others run one after another in the same worker. The model is never called from two threads.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vla_ros.core.errors import ConfigError, PolicyError
from vla_ros.core.features import PolicyObservation
from vla_ros.policies.base import Policy

logger = logging.getLogger("vla_ros.serve")

MAX_WAIT_LIMIT_S = 0.005  # the longest a request may be held back waiting for company
ACTIVE_WINDOW_S = 2.0  # a client that sent a request this recently counts as active (a chunk takes < 1 s here)


@dataclass(frozen=True)
class BatchConfig:
    max_batch: int = 8  # 1: every request runs alone
    max_wait_s: float = 0.002  # how long the first request of a batch waits for others (<= 5 ms)

    def __post_init__(self) -> None:
        if not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ConfigError(f"max_batch must be an integer >= 1, got {self.max_batch!r}", key="max_batch")
        if not (math.isfinite(self.max_wait_s) and 0 <= self.max_wait_s <= MAX_WAIT_LIMIT_S):
            raise ConfigError(f"max_wait_s must be in [0, {MAX_WAIT_LIMIT_S}] s, got {self.max_wait_s}",
                              key="max_wait_s")


@dataclass
class _Request:
    observation: PolicyObservation
    future: Future
    received: float = field(default_factory=time.perf_counter)
    call: Callable[[], Any] | None = None  # instead of an inference: run this between batches
    client: Any = None  # who sent it (a connection, a peer); None: unknown, counted as a client of its own


def can_batch(policy: Policy) -> bool:
    """Whether `policy` computes several chunks in one forward pass (it has `predict_chunks`)."""
    return callable(getattr(policy, "predict_chunks", None))


def input_signature(observation: PolicyObservation) -> tuple:
    """What must agree for two observations to share a forward pass: each array's key, shape and dtype."""
    return tuple(sorted((key, value.shape, value.dtype.str) for key, value in observation.items()
                        if isinstance(value, np.ndarray)))


class InferenceBatcher:
    """Runs `policy` in one worker thread; `submit` from any thread. Results are `(actions (H, A) float32,
    timing {"infer_ms", "queue_ms", "batch_size"})`; a failing policy call fails every request of its batch."""

    def __init__(self, policy: Policy, config: BatchConfig = BatchConfig()):
        self.policy = policy
        self.config = config
        self.batching = config.max_batch > 1 and can_batch(policy)
        features = policy.metadata.features
        self._expected = (features.chunk_size, features.action_dim)
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self.batches_run = 0
        self.requests_run = 0
        self._last_seen: dict[Any, float] = {}  # client -> when its last request arrived (worker thread only)
        self._thread = threading.Thread(target=self._run, name="vla_ros_serve_model", daemon=True)
        self._thread.start()

    def submit(self, observation: PolicyObservation, *, client: Any = None) -> Future:
        """A Future of the request's (actions, timing); `client` (hashable) tells robots apart for the wait."""
        future: Future = Future()
        if not self._thread.is_alive():
            future.set_exception(PolicyError("the policy server is shutting down"))
            return future
        self._queue.put(_Request(observation, future, client=client))
        return future

    def call(self, function) -> Future:
        """Run `function()` in the model's worker, between batches (e.g. reseeding the policy)."""
        future: Future = Future()
        self._queue.put(_Request({}, future, call=function))
        return future

    def close(self, timeout_s: float = 5.0) -> None:
        """Finish the batch in progress, fail the queued requests, stop the worker."""
        self._queue.put(None)
        self._thread.join(timeout_s)
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            if request is not None and not request.future.done():
                request.future.set_exception(PolicyError("the policy server is shutting down"))

    # -- the worker ------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            if self.batching:
                deadline = time.perf_counter() + self.config.max_wait_s
                while len(batch) < self.config.max_batch:
                    now = time.perf_counter()
                    waiting = len(batch) < self._active_clients(batch, now)
                    try:
                        request = (self._queue.get(timeout=max(0.0, deadline - now)) if waiting
                                   else self._queue.get_nowait())
                    except queue.Empty:
                        break
                    if request is None:
                        stop = True
                        break
                    batch.append(request)
            for request in batch:
                if request.client is not None:
                    self._last_seen[request.client] = request.received
            groups: dict[tuple, list[_Request]] = {}
            for request in batch:
                if request.call is not None:  # the requests before it run first
                    for group in groups.values():
                        self._infer(group)
                    groups = {}
                    self._run_call(request)
                    continue
                groups.setdefault(input_signature(request.observation), []).append(request)
            for group in groups.values():
                self._infer(group)
            if stop:
                return

    @staticmethod
    def _run_call(request: _Request) -> None:
        if not request.future.set_running_or_notify_cancel():
            return
        try:
            request.future.set_result(request.call())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            request.future.set_exception(exc)

    def _active_clients(self, batch: list[_Request], now: float) -> int:
        """Clients seen within ACTIVE_WINDOW_S, those of `batch` included; an unknown sender counts as new."""
        for client in [c for c, seen in self._last_seen.items() if now - seen > ACTIVE_WINDOW_S]:
            del self._last_seen[client]
        known = set(self._last_seen) | {r.client for r in batch if r.client is not None}
        return len(known) + sum(r.client is None for r in batch) + (1 if any(r.client is None for r in batch) else 0)

    def _infer(self, group: list[_Request]) -> None:
        group = [request for request in group if request.future.set_running_or_notify_cancel()]
        if not group:
            return
        start = time.perf_counter()
        try:
            if len(group) > 1:
                chunks = np.asarray(self.policy.predict_chunks([r.observation for r in group]), dtype=np.float32)
            else:
                chunks = np.asarray(self.policy.predict_chunk(group[0].observation), dtype=np.float32)[None]
            infer_ms = (time.perf_counter() - start) * 1e3
            if chunks.shape != (len(group), *self._expected) or not np.isfinite(chunks).all():
                raise PolicyError(f"policy '{self.policy.metadata.name}' returned actions of shape "
                                  f"{chunks.shape[1:]} for {len(group)} request(s) (finite: "
                                  f"{bool(np.isfinite(chunks).all())}); its metadata promises {self._expected}")
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting client, the worker goes on
            logger.debug("policy failed on a batch of %d", len(group), exc_info=True)
            for request in group:
                request.future.set_exception(exc)
            return
        self.batches_run += 1
        self.requests_run += len(group)
        for request, actions in zip(group, chunks, strict=True):
            request.future.set_result((actions, {"infer_ms": infer_ms, "queue_ms": (start - request.received) * 1e3,
                                                 "batch_size": len(group)}))
