"""The gateway's FastAPI application: routers, error handlers, request metrics and the engines' lifetime."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import errors, metrics
from .entrypoints import health
from .entrypoints.megatron.api_router import router as megatron_router
from .entrypoints.openai.api_router import router as openai_router
from .entrypoints.playground.api_router import router as playground_router
from .entrypoints.templates.api_router import router as templates_router
from .limits import Limits
from .middleware import GatewayMiddleware
from .models import ModelSet
from .templates.library import Template, load_library


def create_app(models: ModelSet, grpc_port: int | None = None, grpc_host: str = "0.0.0.0",
               templates: dict[str, Template] | None = None, limits: Limits | None = None,
               api_keys: set[str] | None = None) -> FastAPI:
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
    limits = limits or Limits()
    models.guard(limits)
    app.state.models = models
    app.state.limits = limits
    app.state.templates = templates if templates is not None else load_library()
    for engine in models.engines.values():
        metrics.track(engine)
    errors.install(app)
    app.include_router(megatron_router)
    app.include_router(openai_router)
    app.include_router(templates_router)
    app.include_router(health.router)
    app.include_router(playground_router)
    app.add_middleware(GatewayMiddleware, api_keys=api_keys, max_body_bytes=limits.max_body_bytes)
    return app
