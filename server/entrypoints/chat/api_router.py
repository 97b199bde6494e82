"""HTTP wiring of OpenAI's `/v1/chat/completions`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from ..openai.api_router import SSE
from .protocol import ChatCompletionRequest, ChatCompletionResponse
from .serving import complete, open_stream

router = APIRouter(prefix="/v1", tags=["openai"])


@router.post("/chat/completions", response_model=ChatCompletionResponse, responses=SSE)
async def chat_completions(body: ChatCompletionRequest, request: Request):
    """OpenAI chat completions: the messages through the model's chat template; `stream: true` answers Server-Sent
    Events of `chat.completion.chunk` objects ending in `data: [DONE]`."""
    engine = request.app.state.models.get(body.model)
    if body.stream:
        events = await open_stream(engine, body)
        return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    response, _ = await complete(engine, body)
    return response
