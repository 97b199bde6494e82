"""The gateway's FastAPI application: routers, error handlers, request metrics and the engines' lifetime."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI

from glotta.core.errors import ErrorKind, GlottaError

from . import error_responses as errors
from . import metrics, openapi
from .auth import ApiKeys
from .entrypoints import docs, health
from .entrypoints.chat.api_router import router as chat_router
from .entrypoints.megatron.api_router import router as megatron_router
from .entrypoints.openai.api_router import router as openai_router
from .entrypoints.playground.api_router import router as playground_router
from .entrypoints.templates.api_router import router as templates_router
from .http_server import ABORT_GRACE_S, Drain
from .limits import Limits
from .middleware import GatewayMiddleware
from .models import ModelSet
from .templates.library import Template, load_library


def create_app(models: ModelSet, grpc_port: int | None = None, grpc_host: str = "127.0.0.1",
               templates: dict[str, Template] | None = None, limits: Limits | None = None,
               api_keys: ApiKeys | None = None) -> FastAPI:
    """The REST app; with `grpc_port`, the `glotta.v1` gRPC service runs beside it on the same engines, loop and keys.

    `templates` is the prompt-template library (default: the built-in one); load it with `load_library`, which
    rejects an invalid file with its name and the reason, before anything starts.
    """
    limits = limits or Limits()
    api_keys = api_keys or ApiKeys()
    grpc: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.started = time.time()
        await models.start()
        if grpc_port:
            from .grpc_api.service import start_server

            grpc["server"] = await start_server(models, grpc_port, grpc_host, api_keys, limits)
        try:
            yield
        finally:
            if "stopping" in grpc:  # a drain began: its calls had the drain timeout, then UNAVAILABLE
                await grpc["stopping"]
            elif "server" in grpc:
                await grpc["server"].stop(grace=1)
            await models.stop()

    async def begin_drain() -> None:  # gRPC stops taking calls with HTTP, and drains beside it
        if "server" in grpc:
            grpc["stopping"] = asyncio.ensure_future(grpc["server"].stop(grace=limits.drain_timeout_s + ABORT_GRACE_S))

    def expire_drain() -> int:
        error = GlottaError(ErrorKind.UNAVAILABLE, f"server shutting down: the drain timeout "
                            f"({limits.drain_timeout_s:g} s) passed before this request finished")
        return sum(e.abort_all(error) for e in models.engines.values())

    app = FastAPI(title="Glotta gateway", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    models.guard(limits)
    app.state.models = models
    app.state.limits = limits
    app.state.drain = Drain(begin_drain, expire_drain, limits.drain_timeout_s)
    app.state.templates = templates if templates is not None else load_library()
    for engine in models.engines.values():
        metrics.track(engine)
    errors.install(app)
    openapi.install(app, api_keys.required)
    app.include_router(megatron_router)
    app.include_router(openai_router)
    app.include_router(chat_router)
    app.include_router(templates_router)
    app.include_router(health.router)
    app.include_router(playground_router)
    app.include_router(docs.router)
    app.add_middleware(GatewayMiddleware, api_keys=api_keys, max_body_bytes=limits.max_body_bytes,
                       body_timeout_s=limits.body_timeout_s)
    return app
