"""The gateway's one ASGI middleware: request ids and access logs, API keys, content types, body size and time,
security headers, disconnects.

Pure ASGI (no response buffering), so SSE streams pass straight through.
- Every response carries `X-Request-Id` (the client's, or a new one), and one JSON log line per request names it.
- API keys (auth.py): `/api`, `/v1/*` and the template routes need `Authorization: Bearer KEY` when keys are set.
- A POST/PUT body must be JSON: a `Content-Type` other than `application/json` (or `…+json`) is a 415. Browsers
  send form and `text/plain` bodies from any page without asking ("simple requests"), so reading those as JSON
  would let any web page a user visits spend the server's compute (CSRF). A request without `Content-Type` is
  still read as JSON: old scripts send none, and a browser cannot send a body without one.
- Bodies over the limit get 413, from Content-Length or counted while reading. Before answering, the rest of the body
  is read and discarded up to a bound (as nginx's lingering close does), then the connection closes: a client that
  writes its whole body before reading (Python's urllib, http.client, requests) reads the 413 instead of a reset.
  A body that does not arrive within the body timeout is a 408, and the connection closes.
- Security headers on every response: `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
  `Referrer-Policy: no-referrer`, and a `Content-Security-Policy` (`default-src 'none'; frame-ancestors 'none'` for
  the API; HTML pages set their own, as strict as their content allows).
- A client that disconnects before its answer cancels the handler, so its rows leave the batch at the next step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

from glotta.core.errors import ErrorKind, GlottaError

from . import error_responses as errors
from . import metrics
from .auth import ApiKeys
from .entrypoints.wire_types import body_may_hold_surrogates, may_hold_surrogates

log = logging.getLogger("glotta.access")
LINGER_BYTES = 64 * 1024 * 1024  # at most this much of an oversized body is read and discarded before the 413
LINGER_S = 5.0
COUNTED = ("/api", "/v1/completions")
API_CSP = b"default-src 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"))


def is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class _BodyTooLarge(Exception):
    pass


class _BodyTooSlow(Exception):
    pass


class GatewayMiddleware:
    def __init__(self, app, api_keys: ApiKeys, max_body_bytes: int, body_timeout_s: float = 30.0) -> None:
        self.app = app
        self.keys = api_keys
        self.max_body = max_body_bytes
        self.body_timeout = body_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope.get("path", ""), scope.get("method", "")
        headers = dict(scope.get("headers", []))
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        started = time.perf_counter()
        state = {"status": 500, "body": 0}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                out = list(message.get("headers", []))
                present = {k.lower() for k, _ in out}
                out += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                if b"content-security-policy" not in present:
                    out.append((b"content-security-policy", API_CSP))
                if b"cache-control" not in present:
                    out.append((b"cache-control", b"no-store"))
                out.append((b"x-request-id", request_id.encode()))
                message = dict(message, headers=out)
            await send(message)

        try:
            if not self.keys.is_open(path) and not self.keys.allows(
                    headers.get(b"authorization", b"").decode("latin-1")):
                return await self._reject(path, send_wrapper, GlottaError(ErrorKind.UNAUTHORIZED, "Unauthorized"))
            length = headers.get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_body:
                await self._linger(receive)
                return await self._reject(path, send_wrapper, self._too_large(), close=True)
            if method in ("POST", "PUT"):
                content_type = headers.get(b"content-type")
                if content_type is not None and not is_json(content_type):
                    await self._linger(receive)
                    given = content_type.decode("latin-1")[:80]
                    return await self._reject(path, send_wrapper, GlottaError(
                        ErrorKind.MEDIA_TYPE, f"Content-Type must be application/json, not {given!r}",
                        "Content-Type"), close=True)
                kept = [(k, v) for k, v in scope.get("headers", []) if k != b"content-type"]
                scope = dict(scope, headers=[*kept, (b"content-type", b"application/json")])
            await self._run(scope, receive, send_wrapper, state)
        except _BodyTooLarge:
            await self._linger(receive)
            await self._reject(path, send_wrapper, self._too_large(), close=True)
        except _BodyTooSlow:
            await self._reject(path, send_wrapper, GlottaError(
                ErrorKind.SLOW_CLIENT, f"request body not received within {self.body_timeout:g} s", "body"),
                close=True)
        finally:
            if path in COUNTED or path.startswith("/v1/templates/"):
                label = "/v1/templates/{name}/run" if path.startswith("/v1/templates/") else path
                metrics.REQUESTS.labels(label, str(state["status"])).inc()
            if log.isEnabledFor(logging.INFO):  # no JSON built per request when the access log is off
                log.info(json.dumps({"request_id": request_id, "method": method, "path": path,
                                     "status": state["status"], "ms": round((time.perf_counter() - started) * 1e3, 2)}))

    def _too_large(self) -> GlottaError:
        return GlottaError(ErrorKind.TOO_LARGE, f"request body larger than {self.max_body} bytes", "body")

    @staticmethod
    async def _linger(receive) -> None:
        """Read and drop what the client is still sending (bounded in bytes and time), so it can read our answer."""
        async def drain() -> None:
            seen = 0
            while seen < LINGER_BYTES:
                message = await receive()
                if message["type"] == "http.disconnect" or not message.get("more_body"):
                    return
                seen += len(message.get("body", b""))

        try:
            await asyncio.wait_for(drain(), LINGER_S)
        except asyncio.TimeoutError:
            pass

    async def _read_body(self, receive, state) -> bytes | None:
        """The whole body (None if the client left), within the size limit and the body timeout."""
        body = bytearray()
        deadline = time.monotonic() + self.body_timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except asyncio.TimeoutError:
                raise _BodyTooSlow() from None
            if message["type"] == "http.disconnect":
                state["status"] = 499
                return None
            body += message.get("body", b"")
            if len(body) > self.max_body:
                raise _BodyTooLarge()
            if not message.get("more_body"):
                return bytes(body)

    async def _run(self, scope, receive, send, state) -> None:
        """Read the body (bounded), run the app on it, and cancel the app if the client disconnects first.

        Only this method reads the real `receive`: the app gets the body, then waits on our disconnect event, so
        Starlette's own disconnect listener (SSE) and ours never compete for messages.
        """
        body = await self._read_body(receive, state)
        if body is None:
            return
        may_hold_surrogates.set(body_may_hold_surrogates(body))  # seen by the app task started below
        disconnected = asyncio.Event()
        replayed = False

        async def app_receive():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def app_send(message):
            if message["type"] == "http.response.body" and not message.get("more_body"):
                state["done"] = True
            await send(message)

        app_task = asyncio.ensure_future(self.app(scope, app_receive, app_send))

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()
            if not state.get("done"):
                app_task.cancel()  # the rows of this request leave the batch at the next step

        watcher = asyncio.ensure_future(watch_disconnect())
        try:
            await app_task
        except asyncio.CancelledError:
            if not disconnected.is_set():  # cancelled from outside (shutdown), not by the client
                raise
            state["status"] = 499  # client closed the request
        finally:
            watcher.cancel()

    @staticmethod
    async def _reject(path: str, send, e: GlottaError, close: bool = False) -> None:
        data = errors.encode(errors.body(errors.family(path), e))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in errors.headers(e).items()]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": errors.CODES[e.kind][0], "headers": headers})
        await send({"type": "http.response.body", "body": data})
