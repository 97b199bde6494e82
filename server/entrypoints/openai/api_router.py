"""HTTP wiring of the OpenAI-compatible endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from .protocol import CompletionRequest, CompletionResponse, ModelCard, ModelList
from .serving import complete, open_stream

router = APIRouter(prefix="/v1", tags=["openai"])


# each Server-Sent Event: `data` holds a CompletionResponse chunk as JSON, an error object, or the final [DONE]
SSE_EVENT = {"type": "object", "required": ["data"],
             "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"}}}
SSE = {200: {"content": {"text/event-stream": {"schema": SSE_EVENT}},
             "description": "the completion; with `stream: true`, Server-Sent Events ending in `data: [DONE]`"}}


@router.post("/completions", response_model=CompletionResponse, responses=SSE)
async def completions(body: CompletionRequest, request: Request):
    """OpenAI completions; `stream: true` answers Server-Sent Events ending in `data: [DONE]`."""
    engine = request.app.state.models.get(body.model)
    if body.stream:
        events = await open_stream(engine, body)
        return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    return await complete(engine, body)


@router.get("/models", response_model=ModelList)
async def models(request: Request) -> ModelList:
    served = request.app.state.models.engines.values()
    return ModelList(data=[ModelCard(id=e.name, max_model_len=e.max_context, engine=getattr(e, "precision", None),
                                     chat=e.chat_template is not None) for e in served])
