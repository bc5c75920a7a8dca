"""Running a policy server (any protocol: each has `serve_until(stop)`) in the foreground or a background thread."""

from __future__ import annotations

import signal
import threading
from typing import Protocol

from vla_ros.core.errors import ConfigError


class BlockingServer(Protocol):
    port: int | None

    @property
    def url(self) -> str: ...

    def serve_until(self, stop: threading.Event, *, on_listening=None) -> None:
        """Listen until `stop` is set; call `on_listening(port)` once bound."""


def run_until_signalled(server: BlockingServer, *, on_listening=None) -> None:
    """Serve in this thread until SIGINT or SIGTERM."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.serve_until(stop, on_listening=on_listening)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class BackgroundServer:
    """A blocking server in a daemon thread (tests, benchmarks):

        with BackgroundServer(Gr00tServer(policy, ServeConfig(port=0), embodiment=so101)) as server:
            client = make_policy(server.url, embodiment=so101)
    """

    def __init__(self, server: BlockingServer):
        self.server = server
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="vla_ros_serve", daemon=True)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int | None:
        return self.server.port

    def start(self, timeout_s: float = 10.0) -> BackgroundServer:
        """Listen; returns once the port is bound (`port` then holds it). Starting twice does nothing."""
        if self._thread.ident is not None:
            return self
        self._thread.start()
        if not self._listening.wait(timeout_s) and self._error is None:
            raise ConfigError(f"policy server did not start listening within {timeout_s} s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close every connection and stop listening; the port is free again when this returns."""
        self._stop.set()
        self._thread.join(timeout_s)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            self.server.serve_until(self._stop, on_listening=lambda port: self._listening.set())
        except BaseException as exc:  # noqa: BLE001 - handed to start()
            self._error = exc
            self._listening.set()
