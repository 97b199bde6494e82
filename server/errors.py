"""One place that turns failures into HTTP answers: Megatron's texts on `/api`, OpenAI's error object on `/v1`.

No handler lets a stack trace reach a client: validation → 400, unknown model → 404, engine down → 503.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .engine.protocol import EngineError, EngineUnavailable
from .entrypoints.megatron.protocol import FieldError
from .limits import Overloaded, RequestTimeout
from .models import ModelNotFound

log = logging.getLogger("glotta.server")


class ApiError(Exception):
    """An error a handler raises with its status, message and the field to blame."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


def error_response(request: Request, status: int, message: str, param: str | None, kind: str) -> JSONResponse:
    if request.url.path.startswith("/api"):
        # Megatron's own tooling reads `message` (werkzeug style); `param` names the field.
        return JSONResponse({"message": message, "param": param}, status_code=status)
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status)


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    err = exc.errors()[0]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return cause.message, cause.param
    loc = [str(x) for x in err.get("loc", ()) if x != "body"]
    if err.get("type") == "json_invalid":
        return f"Invalid JSON body: {err.get('msg')}", "body"
    if err.get("type") == "missing" and not loc:
        return "request body is required", "body"
    param = ".".join(loc) or "body"
    return f"{param}: {err.get('msg')}", param


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _describe_validation(exc)
        if request.url.path.startswith("/api") and message == "request body is required":
            message, param = "prompts argument required", "prompts"
        return error_response(request, 400, message, param, "invalid_request_error")

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status, exc.message, exc.param, exc.kind)

    @app.exception_handler(EngineError)
    async def _engine(request: Request, exc: EngineError) -> JSONResponse:
        return error_response(request, 400, exc.message, exc.param, "invalid_request_error")

    @app.exception_handler(ModelNotFound)
    async def _model(request: Request, exc: ModelNotFound) -> JSONResponse:
        return error_response(request, 404, str(exc), "model", "not_found_error")

    @app.exception_handler(EngineUnavailable)
    async def _unavailable(request: Request, exc: EngineUnavailable) -> JSONResponse:
        return error_response(request, 503, f"model unavailable: {exc}", None, "service_unavailable")

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        response = error_response(request, 429, str(exc), None, "overloaded")
        response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(RequestTimeout)
    async def _timeout(request: Request, exc: RequestTimeout) -> JSONResponse:
        return error_response(request, 504, str(exc), None, "timeout")

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(request, 500, "internal server error", None, "internal_error")
