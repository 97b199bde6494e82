"""The HTTP server the gateway runs in: uvicorn, with what it lacks against slow, greedy or hostile clients, and a stop
that tells every client what happened.

Why uvicorn, and what is added. uvicorn (httptools) is the server FastAPI and vLLM ship with and the fastest here; it
bounds concurrent *requests* (`limit_concurrency`) but not connections, and it has no timeout for reading a request:
a client that sends half its headers and then nothing holds its connection (and a place in the graceful shutdown's
wait) for ever, and llhttp puts no cap on header size. `GuardedHttpProtocol` adds, per connection:
- a header timeout: a new connection, or one between requests, must deliver a request's line and headers within
  `header_timeout_s`, else it gets 408 and is closed (idle keep-alive connections close earlier, at uvicorn's 5 s);
- a header size cap (`max_header_bytes`): 431, then closed;
- a bound on open connections (`max_connections`): one more gets 503 and is closed at once.
The body is the middleware's (its own timeout and size limit, answered in the route's error shape).

Stop: SIGTERM, SIGINT or SIGHUP stop accepting and let the requests in flight finish for up to the drain timeout
(`Drain`); then every generation still open ends with a 503 that says why — an SSE stream with a final error event,
a gRPC call with UNAVAILABLE — and the server exits normally, so whoever started it (the launcher stopping Triton,
systemd, Kubernetes) sees a clean end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from typing import Awaitable, Callable

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .limits import Limits

log = logging.getLogger("glotta.server")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
ABORT_GRACE_S = 3.0  # after the drain timeout: time for the aborted requests to send their last bytes


class GuardedHttpProtocol(HttpToolsProtocol):
    header_timeout_s = Limits.header_timeout_s
    max_header_bytes = Limits.max_header_bytes
    max_connections = Limits.max_connections

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            self._refuse(503, "Service Unavailable", b"too many open connections")
            return
        self._await_headers()

    def _await_headers(self) -> None:
        self._header_bytes = 0
        self._awaiting_headers = True
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        if self._awaiting_headers and not self.transport.is_closing():
            self._refuse(408, "Request Timeout", b"request headers not received in time")

    def _refuse(self, status: int, reason: str, text: bytes) -> None:
        self._awaiting_headers = False
        self._cancel_header_timer()
        self.transport.write(f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\nconnection: close\r\n"
                             f"content-length: {len(text)}\r\n\r\n".encode() + text)
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        # still without headers after this chunk: all of it was request line and headers (a body comes after them)
        if self._awaiting_headers and self._header_bytes > self.max_header_bytes:
            self._refuse(431, "Request Header Fields Too Large", b"request headers too large")

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # the next request's headers already arrived
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._await_headers()

    def connection_lost(self, exc) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)


def protocol_for(limits: Limits) -> type[GuardedHttpProtocol]:
    return type("GatewayHttpProtocol", (GuardedHttpProtocol,), {
        "header_timeout_s": limits.header_timeout_s, "max_header_bytes": limits.max_header_bytes,
        "max_connections": limits.max_connections})


class Drain:
    """What a stop does: `begin` when the server stops accepting, `expire` once the drain timeout has passed."""

    def __init__(self, begin: Callable[[], Awaitable[None]], expire: Callable[[], int], timeout_s: float) -> None:
        self.begin, self.expire, self.timeout_s = begin, expire, timeout_s


class GatewayServer(uvicorn.Server):
    """uvicorn's server, but a stop signal (SIGTERM from systemd / docker stop / Kubernetes, SIGINT, SIGHUP) ends
    `run()` normally after the drain instead of being re-raised, so the launcher's cleanup — stopping the Triton it
    started — always runs; and the drain ends open generations with a reason instead of cutting them."""

    def __init__(self, config: uvicorn.Config, drain: Drain | None = None) -> None:
        super().__init__(config)
        self.drain = drain

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
        if self._captured_signals:
            log.info("stopped by %s", signal.Signals(self._captured_signals[-1]).name)

    async def shutdown(self, sockets=None) -> None:
        timer = None
        if self.drain is not None:
            drain = self.drain
            await drain.begin()

            def expire() -> None:
                n = drain.expire()
                if n:
                    log.warning("drain timeout (%g s) passed: %d generation(s) ended with 503", drain.timeout_s, n)

            timer = asyncio.get_running_loop().call_later(drain.timeout_s, expire)
        try:
            await super().shutdown(sockets)
        finally:
            if timer is not None:
                timer.cancel()


def serve(app, host: str, port: int, limits: Limits, log_level: str = "info") -> None:
    """Run the gateway app until a stop signal; returns once it has drained and stopped."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            http=protocol_for(limits),
                            timeout_graceful_shutdown=limits.drain_timeout_s + ABORT_GRACE_S)
    GatewayServer(config, getattr(app.state, "drain", None)).run()
