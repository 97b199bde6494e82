"""The OpenAPI document describes what the gateway really sends: a 400 with the family's error body where FastAPI
would advertise a 422 it never sends, and every other error status a route can answer (errors.CODES), so that a
client generated from the schema, or a fuzzer checking responses against it, meets no surprise."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from .auth import ApiKeys
from .error_responses import family


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = Field(None, description="a reason OpenAI's API names (context_length_exceeded, ...), or null")


class OpenAIError(BaseModel):
    """OpenAI's error shape (`/v1/*`)."""

    error: OpenAIErrorDetail


class MegatronError(BaseModel):
    """Megatron-LM's error text in `message`, and the field to blame (`/api`)."""

    message: str
    param: str | None = None


_WHY = {400: "invalid request (the message names the field)", 401: "missing or wrong API key (when keys are set)",
        404: "unknown model, template or route", 408: "request body not received in time",
        413: "request body too large", 415: "request body is not JSON", 429: "overloaded: retry after Retry-After",
        500: "internal error", 503: "model unavailable, or the server is stopping", 504: "queue or request timeout"}
_GENERATION = {400, 404, 429, 503, 504}  # a route that runs a model can answer these
_BODY = {400, 408, 413, 415}  # a route that reads a body can answer these


def _statuses(path: str, method: str, operation: dict) -> set[int]:
    codes = {500}
    if not ApiKeys.is_open(path):
        codes.add(401)  # documented whether or not keys are set: the same client may meet both servers
    if "requestBody" in operation or method in ("post", "put"):
        codes |= _BODY
    if operation.get("parameters") or "requestBody" in operation:
        codes |= {400, 404}
    if path in ("/api", "/v1/completions") or path.endswith("/run"):
        codes |= _GENERATION
    return codes


def install(app: FastAPI, keys_required: bool = False) -> None:
    """`keys_required`: API keys are set, so the document declares the Bearer scheme on every route that needs one."""
    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (OpenAIErrorDetail, OpenAIError, MegatronError):
            components[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        if keys_required:
            schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, ops in schema.get("paths", {}).items():
            if path.startswith(("/health", "/metrics")):
                continue
            body = "MegatronError" if family(path) == "megatron" else "OpenAIError"
            for method, op in ops.items():
                if keys_required and not ApiKeys.is_open(path):
                    op["security"] = [{"bearer": []}]
                responses = op.setdefault("responses", {})
                responses.pop("422", None)
                for code in sorted(_statuses(path, method, op)):
                    responses.setdefault(str(code), {
                        "description": _WHY[code],
                        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}}})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
