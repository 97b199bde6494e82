"""The gateway's one ASGI middleware: request ids and access logs, API keys, body size, JSON bodies, disconnects.

Pure ASGI (no response buffering), so SSE streams pass straight through.
- Every response carries `X-Request-Id` (the client's, or a new one), and one JSON log line per request names it.
- With API keys set, `/api` and `/v1/*` need `Authorization: Bearer KEY`; health, metrics, the docs and the
  playground page stay open (the page sends the key it is given). Keys
  are compared as SHA-256 digests with `hmac.compare_digest` and never logged; a 401 does not say what was wrong.
- Bodies over the limit get 413, from Content-Length or counted while reading. Before answering, the rest of the body
  is read and discarded up to a bound (as nginx's lingering close does), then the connection closes: a client that
  writes its whole body before reading (Python's urllib, http.client, requests) reads the 413 instead of a reset.
- POST/PUT bodies are read as JSON whatever their Content-Type (`curl -d` without `-H` sends form encoding).
- A client that disconnects before its answer cancels the handler, so its rows leave the batch at the next step.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid

from glotta.core.errors import ErrorKind, GlottaError

from . import errors, metrics

log = logging.getLogger("glotta.access")
OPEN_PREFIXES = ("/health", "/metrics", "/docs", "/openapi.json", "/redoc", "/playground")
LINGER_BYTES = 64 * 1024 * 1024  # at most this much of an oversized body is read and discarded before the 413
LINGER_S = 5.0
COUNTED = ("/api", "/v1/completions")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class _BodyTooLarge(Exception):
    pass


class GatewayMiddleware:
    def __init__(self, app, api_keys: set[str] | None, max_body_bytes: int) -> None:
        self.app = app
        self._keys = [_digest(k) for k in (api_keys or ())]
        self.max_body = max_body_bytes

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        given = _digest(token.strip())
        ok = False
        for key in self._keys:  # no early exit: the time taken does not depend on which key matched
            ok |= hmac.compare_digest(given, key)
        return ok

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
                message = dict(message, headers=[*message.get("headers", []), (b"x-request-id", request_id.encode())])
            await send(message)

        try:
            if self._keys and path != "/" and not path.startswith(OPEN_PREFIXES) and not self._authorized(headers):
                return await self._reject(path, send_wrapper, GlottaError(ErrorKind.UNAUTHORIZED, "Unauthorized"))
            length = headers.get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_body:
                await self._linger(receive)
                return await self._reject(path, send_wrapper, self._too_large(), close=True)
            if method in ("POST", "PUT"):
                kept = [(k, v) for k, v in scope.get("headers", []) if k != b"content-type"]
                scope = dict(scope, headers=[*kept, (b"content-type", b"application/json")])
            await self._run(scope, receive, send_wrapper, state)
        except _BodyTooLarge:
            await self._linger(receive)
            await self._reject(path, send_wrapper, self._too_large(), close=True)
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

    async def _run(self, scope, receive, send, state) -> None:
        """Read the body (bounded), run the app on it, and cancel the app if the client disconnects first.

        Only this method reads the real `receive`: the app gets the body, then waits on our disconnect event, so
        Starlette's own disconnect listener (SSE) and ours never compete for messages.
        """
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                state["status"] = 499
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                raise _BodyTooLarge()
            if not message.get("more_body"):
                break
        disconnected = asyncio.Event()
        replayed = False

        async def app_receive():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
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
        data = json.dumps(errors.body(errors.family(path), e)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in errors.headers(e).items()]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": errors.CODES[e.kind][0], "headers": headers})
        await send({"type": "http.response.body", "body": data})
