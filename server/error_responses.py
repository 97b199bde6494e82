"""Every failure becomes one answer, from one table: `GlottaError.kind` → HTTP status and gRPC code; the body's
shape and field names are those of the route's API family — Megatron's `{"message", "param"}` on `/api`, OpenAI's
`{"error": {"message", "type", "param", "code"}}` everywhere else. No stack trace reaches a client.
"""

from __future__ import annotations

import json
import logging

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from glotta.core.errors import ErrorKind, GlottaError, rename_fields

log = logging.getLogger("glotta.server")

CODES: dict[ErrorKind, tuple[int, grpc.StatusCode]] = {
    ErrorKind.INVALID: (400, grpc.StatusCode.INVALID_ARGUMENT),
    ErrorKind.UNAUTHORIZED: (401, grpc.StatusCode.UNAUTHENTICATED),
    ErrorKind.NOT_FOUND: (404, grpc.StatusCode.NOT_FOUND),
    ErrorKind.METHOD: (405, grpc.StatusCode.UNIMPLEMENTED),
    ErrorKind.SLOW_CLIENT: (408, grpc.StatusCode.DEADLINE_EXCEEDED),
    ErrorKind.TOO_LARGE: (413, grpc.StatusCode.INVALID_ARGUMENT),
    ErrorKind.MEDIA_TYPE: (415, grpc.StatusCode.INVALID_ARGUMENT),
    ErrorKind.OVERLOADED: (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ErrorKind.INTERNAL: (500, grpc.StatusCode.INTERNAL),
    ErrorKind.UNAVAILABLE: (503, grpc.StatusCode.UNAVAILABLE),
    ErrorKind.TIMEOUT: (504, grpc.StatusCode.DEADLINE_EXCEEDED),
}
_KIND_OF_STATUS = {status: kind for kind, (status, _) in CODES.items()}
# the engine's neutral field names → each family's wire names: in `param`, and in the message for identifiers
WIRE_NAMES = {
    "megatron": {"prompt": "prompts", "max_new_tokens": "tokens_to_generate", "add_bos": "add_BOS",
                 "seed": "random_seed"},
    "openai": {"max_new_tokens": "max_tokens"},
    "templates": {"prompt": "inputs", "max_new_tokens": "max_tokens"},  # the rendered prompt comes from `inputs`
}
# OpenAI's `code`: a string naming the reason where its API has one, else null (never the HTTP status)
OPENAI_CODES = {ErrorKind.UNAUTHORIZED: "invalid_api_key", ErrorKind.OVERLOADED: "rate_limit_exceeded"}


def family(path: str) -> str:
    if path == "/api" or path.startswith("/api/"):
        return "megatron"
    return "templates" if path.startswith("/v1/templates/") else "openai"


def wire(api: str, e: GlottaError) -> tuple[str, str | None]:
    """(message, param) with the family's field names."""
    names = WIRE_NAMES[api]
    identifiers = {k: v for k, v in names.items() if "_" in k}  # in prose, only snake_case names are fields
    return rename_fields(e.message, identifiers), rename_fields(e.param, names)


def body(api: str, e: GlottaError) -> dict:
    message, param = wire(api, e)
    if api == "megatron":  # Megatron's own tooling reads `message` (werkzeug style); `param` names the field
        return {"message": message, "param": param}
    code = e.code or OPENAI_CODES.get(e.kind)
    if e.kind is ErrorKind.NOT_FOUND and e.param == "model":
        code = "model_not_found"
    return {"error": {"message": message, "type": e.kind.value, "param": param, "code": code}}


def headers(e: GlottaError) -> dict[str, str]:
    out = {}
    if e.retry_after is not None:
        out["Retry-After"] = str(e.retry_after)
    if e.kind is ErrorKind.UNAUTHORIZED:
        out["WWW-Authenticate"] = "Bearer"
    return out


def encode(obj) -> bytes:
    """JSON bytes of an error body; text that cannot be UTF-8 (a lone surrogate echoed from a request) is escaped."""
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":")).encode()


class ErrorResponse(JSONResponse):
    def render(self, content) -> bytes:
        return encode(content)


def response(path: str, e: GlottaError) -> JSONResponse:
    return ErrorResponse(body(family(path), e), status_code=CODES[e.kind][0], headers=headers(e))


def grpc_code(e: GlottaError) -> grpc.StatusCode:
    return CODES[e.kind][1]


def from_validation(exc: RequestValidationError | ValidationError) -> GlottaError:
    """pydantic's first error, as a GlottaError naming the field (a validator's own GlottaError is kept)."""
    err = exc.errors()[0]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, GlottaError):
        return cause
    loc = [str(x) for x in err.get("loc", ()) if x != "body"]
    if err.get("type") == "json_invalid":
        return GlottaError(ErrorKind.INVALID, f"Invalid JSON body: {err.get('msg')}", "body")
    if err.get("type") == "missing" and not loc:
        return GlottaError(ErrorKind.INVALID, "request body is required", "body")
    param = ".".join(loc) or "body"
    return GlottaError(ErrorKind.INVALID, f"{param}: {err.get('msg')}", param)


def from_http(request: Request, exc: HTTPException) -> GlottaError:
    """Starlette's own answers (unknown route, wrong method, an undecodable body) in the family's shape."""
    kind = _KIND_OF_STATUS.get(exc.status_code, ErrorKind.INVALID if exc.status_code < 500 else ErrorKind.INTERNAL)
    if exc.status_code == 404:
        return GlottaError(kind, f"no route {request.method} {request.url.path}", "path")
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("allow", "")
        return GlottaError(kind, f"method {request.method} is not allowed on {request.url.path}"
                           + (f" (allowed: {allowed})" if allowed else ""), "method")
    if exc.status_code == 400:  # FastAPI could not decode the body (not UTF-8)
        return GlottaError(kind, "request body is not valid UTF-8 JSON", "body")
    return GlottaError(kind, str(exc.detail))


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        e = from_validation(exc)
        if family(request.url.path) == "megatron" and e.message == "request body is required":
            e = GlottaError(ErrorKind.INVALID, "prompts argument required", "prompts")
        return response(request.url.path, e)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        e = from_http(request, exc)
        r = response(request.url.path, e)
        if exc.status_code == 405 and exc.headers:
            r.headers.update(exc.headers)
        return r

    @app.exception_handler(GlottaError)
    async def _glotta(request: Request, exc: GlottaError) -> JSONResponse:
        return response(request.url.path, exc)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return response(request.url.path, GlottaError(ErrorKind.INTERNAL, "internal server error"))
