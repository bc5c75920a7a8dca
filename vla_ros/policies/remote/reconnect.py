"""Whether a policy server is reachable, since when not and why, and the thread that waits for its return.

Shared by the gr00t:// and openvla+http:// clients: a request that fails marks the server away (`mark_down`);
while it is, the client's `predict_chunk` raises at once with `status_message()` (the pipeline holds the arm),
and a background thread calls `probe()` with capped, jittered exponential backoff until it returns.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from vla_ros.core.errors import PolicyError
from vla_ros.policies.remote.client import RemoteConfig, backoff_delays

logger = logging.getLogger("vla_ros.remote")


class ServerWatch:
    """`probe()` returns when the server is back and usable, or raises (an exception's `reason`, else its text,
    becomes the operator's "why")."""

    def __init__(self, label: str, config: RemoteConfig, probe: Callable[[], None]):
        self.label = label  # e.g. "GR00T policy server gr00t://gpu:5555"
        self.config = config
        self._probe = probe
        self._lock = threading.Lock()
        self._up = True
        self._down_since: float | None = None
        self._reason = ""
        self._retry_delay_s = config.retry_initial_s
        self._went_down = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching (after the first contact succeeded)."""
        self._thread = threading.Thread(target=self._run, name="vla_ros_server_watch", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        self._closed.set()
        self._went_down.set()
        if self._thread is not None and self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    @property
    def up(self) -> bool:
        with self._lock:
            return self._up

    def mark_up(self) -> None:
        with self._lock:
            self._up, self._down_since = True, None

    def mark_down(self, reason: str) -> None:
        with self._lock:
            if self._up and self._thread is not None and not self._closed.is_set():
                self._down_since = time.time()
                logger.warning("%s: lost (%s); the arm holds while it reconnects", self.label, reason)
            self._up = False
            self._reason = reason
            if self._down_since is None:
                self._down_since = time.time()
        self._went_down.set()

    def status_message(self) -> str:
        """One line for the operator: connected, or since when and why not, and when it retries."""
        with self._lock:
            if self._up:
                return f"connected to {self.label}"
            since = self._down_since or time.time()
            return (f"{self.label} unreachable since {time.strftime('%H:%M:%S', time.localtime(since))} "
                    f"({time.time() - since:.1f} s; {self._reason}); the arm holds; retrying every "
                    f"{self._retry_delay_s:.1f} s (backing off to {self.config.retry_max_s:g} s)")

    def _run(self) -> None:
        rng = random.Random()
        while not self._closed.is_set():
            self._went_down.wait()
            if self._closed.is_set():
                return
            self._went_down.clear()
            delays = backoff_delays(self.config, rng)
            while not self._closed.is_set() and not self.up:
                delay = next(delays)
                with self._lock:
                    self._retry_delay_s = delay
                self._closed.wait(delay)
                if self._closed.is_set():
                    return
                try:
                    self._probe()
                except Exception as exc:  # noqa: BLE001 - every failure is retried; the reason goes to the operator
                    with self._lock:
                        self._reason = getattr(exc, "reason", None) or str(exc)
                    continue
                self.mark_up()
                logger.info("%s: reachable again", self.label)


class WatchedServerClient:
    """Mixed into a client whose ServerWatch (`self._watch`) follows its server: `connected` and `status_message`
    come from the watch, and `_require_connection()` opens predict_chunk (it raises at once while the server is
    away, so the pipeline holds the arm)."""

    _watch: ServerWatch

    @property
    def connected(self) -> bool:
        return self._watch.up

    def status_message(self) -> str:
        return self._watch.status_message()

    def _require_connection(self) -> None:
        if not self.connected:
            raise PolicyError(self.status_message())
