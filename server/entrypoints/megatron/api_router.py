"""HTTP wiring of Megatron-LM's REST endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Request

from .protocol import MegatronRequest, MegatronResponse
from .serving import generate

router = APIRouter()


@router.put("/api", response_model=MegatronResponse, tags=["megatron"])
async def api(body: MegatronRequest, request: Request) -> MegatronResponse:
    """Megatron-LM's `PUT /api`: `text` = prompt + generation, `segments`, `logprobs`."""
    engine = request.app.state.models.get(body.model)
    return await generate(engine, body)
