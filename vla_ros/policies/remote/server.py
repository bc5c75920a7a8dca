"""A policy served over openpi's websocket protocol, so that robots (and `openpi-client`) can use it remotely.

Any number of clients may connect; the model runs in one worker thread (batching.py), so that the event loop
keeps answering health checks, pings and new connections while a chunk is computed, and concurrent requests
share one forward pass where the policy allows.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import ipaddress
import logging
import threading
import time
import traceback
from dataclasses import dataclass

from vla_ros.core.errors import ConfigError, VlaRosError
from vla_ros.policies.base import Policy
from vla_ros.policies.remote import protocol
from vla_ros.policies.remote.batching import BatchConfig, InferenceBatcher
from vla_ros.policies.remote.service import BackgroundServer

logger = logging.getLogger("vla_ros.serve")

HEALTH_PATH = "/healthz"
AUTH_SCHEMES = ("api-key", "bearer")  # openpi-client sends "Authorization: Api-Key <key>"


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"  # loopback: other machines reach the server only when asked for (0.0.0.0)
    port: int = 8000  # openpi's default; 0 picks a free port
    token: str | None = None  # None: any client may connect
    max_message_bytes: int = 32 * 2**20  # largest observation accepted; 3 cameras at 480x640 take about 2.8 MB
    batch: BatchConfig = BatchConfig()  # concurrent requests in one forward pass, where the policy allows

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port!r}", key="port")
        if self.token is not None and not self.token.strip():
            raise ConfigError("token is empty: give a secret, or none to accept any client", key="token")
        if self.max_message_bytes < 1024:
            raise ConfigError(f"max_message_bytes must be >= 1024, got {self.max_message_bytes}",
                              key="max_message_bytes")


def exposure_warning(host: str, *, token: str | None) -> str | None:
    """What to tell the operator when the server listens beyond this machine; None on loopback."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: assume it resolves to a reachable interface
        loopback = False
    if loopback:
        return None
    advice = "" if token else (f"; no token is set, so anyone who can reach it can run the model: set --token or "
                               f"{protocol.TOKEN_ENV}")
    return f"listening on {host}: other machines can connect{advice}"


class PolicyServer:
    """Serves one Policy to many websocket clients, one inference at a time."""

    def __init__(self, policy: Policy, config: ServeConfig = ServeConfig(), *, robot: str | None = None):
        self.policy = policy
        self.config = config
        self.features = policy.metadata.features
        self._metadata = protocol.pack(protocol.metadata_to_wire(
            policy.metadata, robot=robot, max_message_bytes=config.max_message_bytes))
        self._batcher: InferenceBatcher | None = None
        self.port: int | None = None  # the bound port, once listening
        self.requests_served = 0

    @property
    def url(self) -> str:
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"ws://{host}:{self.port if self.port is not None else self.config.port}"

    async def serve(self, stop: asyncio.Event, *, on_listening=None) -> None:
        """Listen until `stop` is set; then close every connection (code 1001) and return."""
        websockets = protocol.import_websockets()
        # One worker: the model is not assumed thread-safe; concurrent requests are batched instead.
        self._batcher = InferenceBatcher(self.policy, self.config.batch)
        warning = exposure_warning(self.config.host, token=self.config.token)
        if warning:
            logger.warning(warning)
        try:
            server = await websockets.asyncio.server.serve(
                self._handle, self.config.host, self.config.port, compression=None,
                max_size=self.config.max_message_bytes, process_request=self._health_check,
            )
        except OSError as exc:
            self._batcher.close()
            raise ConfigError(f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror or exc}; "
                              "choose another --port or stop the process using it") from exc
        async with server:
            self.port = server.sockets[0].getsockname()[1]
            if on_listening is not None:
                on_listening(self.port)
            await stop.wait()
        self._batcher.close()

    def serve_until(self, stop: threading.Event, *, on_listening=None) -> None:
        """`serve` on its own event loop in this thread, until `stop` (a threading.Event) is set."""

        async def main() -> None:
            done = asyncio.Event()

            async def watch() -> None:
                while not stop.is_set():
                    await asyncio.sleep(0.05)
                done.set()

            watcher = asyncio.create_task(watch())
            try:
                await self.serve(done, on_listening=on_listening)
            finally:
                watcher.cancel()

        asyncio.run(main())

    # -- connection handling ---------------------------------------------------------------------------------------

    def _health_check(self, connection, request):
        if request.path.split("?")[0] == HEALTH_PATH:
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        return None  # go on with the websocket handshake

    def _authorized(self, request) -> bool:
        if self.config.token is None:
            return True
        scheme, _, credential = (request.headers.get("Authorization") or "").strip().partition(" ")
        return scheme.lower() in AUTH_SCHEMES and hmac.compare_digest(credential.strip().encode(),
                                                                      self.config.token.encode())

    async def _handle(self, connection) -> None:
        websockets = protocol.import_websockets()
        close_code = websockets.frames.CloseCode
        peer = _peer_name(connection)
        if not self._authorized(connection.request):
            logger.warning("refused %s: missing or wrong token", peer)
            # A close reason is at most 123 bytes: keep it short.
            await connection.close(close_code.POLICY_VIOLATION, f"missing or wrong token ({protocol.TOKEN_ENV})")
            return
        logger.info("client %s connected", peer)
        await connection.send(self._metadata)
        previous_total_ms = None
        while True:
            try:
                frame = await connection.recv()
            except websockets.exceptions.ConnectionClosed as exc:
                _log_closed(peer, exc, self.config.max_message_bytes)
                return
            received = time.perf_counter()
            try:
                observation = protocol.observation_from_wire(
                    protocol.unpack(frame, source=f"client {peer}"), self.features)
            except VlaRosError as exc:
                logger.warning("client %s sent an unusable observation: %s", peer, exc)
                await _fail(connection, f"invalid observation: {exc}", close_code.INVALID_DATA, websockets)
                return
            try:
                actions, timing = await asyncio.wrap_future(self._batcher.submit(observation, client=peer))
                reply = protocol.pack(protocol.reply_to_wire(actions, timing | (
                    {} if previous_total_ms is None else {"prev_total_ms": previous_total_ms})))
            except Exception as exc:  # noqa: BLE001 - any policy failure goes back to the client, which holds its arm
                logger.error("policy failed on a request from %s", peer, exc_info=exc)
                await _fail(connection, "".join(traceback.format_exception(exc)), close_code.INTERNAL_ERROR,
                            websockets)
                return
            try:
                await connection.send(reply)
            except websockets.exceptions.ConnectionClosed as exc:
                _log_closed(peer, exc, self.config.max_message_bytes)
                return
            self.requests_served += 1
            previous_total_ms = (time.perf_counter() - received) * 1e3


async def _fail(connection, text: str, code, websockets) -> None:
    # openpi's convention: the error as a text frame, then close; clients raise with that text.
    try:
        await connection.send(text)
        await connection.close(code, "request failed: the error text is in the previous frame")
    except websockets.exceptions.ConnectionClosed:
        pass


def _log_closed(peer: str, exc, max_message_bytes: int) -> None:
    frame = exc.rcvd or exc.sent
    code = frame.code if frame is not None else None
    if code == 1009:  # message too big: the library closed it before the frame reached us
        logger.warning("client %s sent a message over the %.1f MB limit (--max-message-mb); connection closed",
                       peer, max_message_bytes / 2**20)
    else:
        logger.info("client %s disconnected (%s)", peer, code)


def _peer_name(connection) -> str:
    address = connection.remote_address
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) and len(address) >= 2 else str(address)


# A PolicyServer in a background thread (tests, benchmarks, processes without asyncio):
#     with ServerThread(PolicyServer(policy, ServeConfig(port=0))) as server:
#         client = RemotePolicy(server.url, embodiment=...)
ServerThread = BackgroundServer
