"""The gateway's FastAPI application: routers, error handlers, request metrics and the engines' lifetime."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import errors, metrics
from .entrypoints import health
from .entrypoints.megatron.api_router import router as megatron_router
from .entrypoints.openai.api_router import router as openai_router
from .entrypoints.templates.api_router import router as templates_router
from .models import ModelSet
from .templates.library import Template, load_library

_COUNTED = ("/api", "/v1/completions")


class GatewayMiddleware:
    """Pure ASGI middleware (no buffering, so SSE streams pass straight through).

    It reads every POST/PUT body as JSON whatever its Content-Type (`curl -d '{...}'` sends form encoding by default,
    and a user who forgot `-H` should get an answer, not a type error), and counts generation requests by status.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope.get("method") in ("POST", "PUT"):
            headers = [(k, v) for k, v in scope.get("headers", []) if k != b"content-type"]
            scope = dict(scope, headers=[*headers, (b"content-type", b"application/json")])
        path = scope.get("path", "")
        if path not in _COUNTED and not path.startswith("/v1/templates/"):
            return await self.app(scope, receive, send)
        status = {"code": 500}

        async def capture(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            label = "/v1/templates/{name}/run" if path.startswith("/v1/templates/") else path
            metrics.REQUESTS.labels(label, str(status["code"])).inc()


def create_app(models: ModelSet, grpc_port: int | None = None, grpc_host: str = "0.0.0.0",
               templates: dict[str, Template] | None = None) -> FastAPI:
    """The REST app; with `grpc_port`, the `glotta.v1` gRPC service runs beside it on the same engines and loop.

    `templates` is the prompt-template library (default: the built-in one); load it with `load_library`, which
    rejects an invalid file with its name and the reason, before anything starts.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.started = time.time()
        await models.start()
        grpc_server = None
        if grpc_port:
            from .grpc_api.service import start_server

            grpc_server = await start_server(models, grpc_port, grpc_host)
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(grace=5)
            await models.stop()

    app = FastAPI(title="Glotta gateway", version="0.1.0", lifespan=lifespan)
    app.state.models = models
    app.state.templates = templates if templates is not None else load_library()
    for engine in models.engines.values():
        metrics.track(engine)
    errors.install(app)
    app.include_router(megatron_router)
    app.include_router(openai_router)
    app.include_router(templates_router)
    app.include_router(health.router)
    app.add_middleware(GatewayMiddleware)
    return app
