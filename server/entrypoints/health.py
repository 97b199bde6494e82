"""Liveness, readiness and Prometheus metrics: always open, never behind auth."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict:
    """The process answers: restart it if this fails."""
    return {"status": "ok"}


@router.get("/health/ready", responses={503: {"description": "a served model is not ready"}})
async def ready(request: Request) -> JSONResponse:
    """Every served model can take requests: route traffic here only when this is 200."""
    models = request.app.state.models
    status = {name: e.ready() for name, e in models.engines.items()}
    ok = all(status.values())
    return JSONResponse({"ready": ok, "models": status}, status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response,
            responses={200: {"description": "Prometheus text format", "content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
