"""`/v1/chat/completions` logic: messages rendered by the model's chat template (modeling/chat_template.py) into
token ids, `n` engine rows sharing the batch and the prompt's cached prefix, and the chat choices, whole or streamed —
built here once for REST, SSE and gRPC."""

from __future__ import annotations

import logging
import uuid
import weakref
from dataclasses import dataclass
from typing import AsyncIterator

from glotta.core.errors import context_exceeded, invalid

from ...engine.interface import Engine
from ...engine.text_io import encode_text
from ...generation import collect, gather_all, stream
from ..openai.protocol import Usage
from ..openai.request_fields import constraint_of, engine_request
from ..openai.serving import FINISH_REASONS, merge_streams, prepend, usage
from ..sse import sse_events
from .protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    TokenLogprob,
    TopLogprob,
)

log = logging.getLogger("glotta.server")


def chat_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


async def prompt_ids(engine: Engine, req: ChatCompletionRequest) -> list[int]:
    """The conversation as the model's chat template renders it, tokenized as `apply_chat_template` tokenizes it
    (no special tokens added: the template writes them)."""
    refused = req.refused_field()
    if refused is not None:
        raise invalid(f"{refused[0]}: {refused[1]}", refused[0])
    if engine.chat_template is None:
        raise invalid(f"model {engine.name} has no chat template (chat_template.jinja or tokenizer_config.json's "
                      f"`chat_template`): start `glotta serve` with --chat-template FILE, or use /v1/completions",
                      "messages")
    try:
        messages = [m.for_template() for m in req.messages]
    except ValueError as e:
        raise invalid(f"messages: {e}", "messages") from None
    text = engine.chat_template.render(messages, add_generation_prompt=req.add_generation_prompt,
                                       **(req.chat_template_kwargs or {}))
    ids = await encode_text(engine.tokenizer, text, prompt=False)
    if len(ids) >= engine.max_context:
        raise context_exceeded(f"the conversation is {len(ids)} tokens: the model's context is {engine.max_context}",
                               "messages")
    return ids


def _rows(engine: Engine, req: ChatCompletionRequest, ids: list[int], stream_: bool) -> list:
    want = req.max_new_tokens
    max_tokens = engine.max_context - len(ids) if want is None else want  # OpenAI: until the model stops
    group, constraint = uuid.uuid4().hex, constraint_of(req)
    return [engine_request(req, ids, j, max_tokens=max_tokens, logprobs=req.logprobs,
                           top_logprobs=(req.top_logprobs or 0) if req.logprobs else 0, prompt_logprobs=False,
                           group=group, constraint=constraint, stream=stream_) for j in range(req.n)]


def _logprobs(engine: Engine, ids: list[int], lps: list[float] | None, tops: list | None) -> ChoiceLogprobs:
    pieces = engine.token_strings(ids)
    content = []
    for i, (piece, lp) in enumerate(zip(pieces, lps or [])):
        alternatives = [TopLogprob(token=t, logprob=v, bytes=list(t.encode("utf-8")))
                        for t, v in ((tops or [])[i] if tops and i < len(tops) else {}).items()]
        content.append(TokenLogprob(token=piece, logprob=lp, bytes=list(piece.encode("utf-8")),
                                    top_logprobs=alternatives))
    return ChoiceLogprobs(content=content)


@dataclass
class ChatDelta:
    """One streamed piece of one choice, and the token ids and log-probs it holds (gRPC sends those as tokens)."""

    wire: ChunkChoice
    token_ids: list[int]
    logprobs: list[float] | None


async def complete(engine: Engine, req: ChatCompletionRequest) -> tuple[ChatCompletionResponse, list]:
    """The response, and each choice's engine result (gRPC reads its tokens)."""
    ids = await prompt_ids(engine, req)
    requests = _rows(engine, req, ids, stream_=False)
    with engine.admit(len(requests)):
        results = await gather_all(*(collect(engine, r) for r in requests))
    choices = [ChatChoice(index=j, message=AssistantMessage(content=r.text),
                          logprobs=_logprobs(engine, r.token_ids, r.logprobs, r.top_logprobs) if req.logprobs else None,
                          finish_reason=FINISH_REASONS.get(r.finish_reason or ""))
               for j, r in enumerate(results)]
    use = usage(len(ids), sum(len(r.token_ids) for r in results))
    return ChatCompletionResponse(id=chat_id(), model=engine.name, choices=choices, usage=use), results


async def stream_deltas(engine: Engine, req: ChatCompletionRequest) -> AsyncIterator[tuple[ChatDelta, Usage]]:
    """Each choice's deltas (the first carries the assistant role) with the usage so far. The first one is computed
    before this returns: a request the engine refuses fails before any byte goes out."""
    ids = await prompt_ids(engine, req)
    requests = _rows(engine, req, ids, stream_=True)
    admission = engine.admit(len(requests))
    try:
        merged = merge_streams([stream(engine, r) for r in requests])
        first = await anext(merged)
    except BaseException:
        admission.release()
        raise
    counts = usage(len(ids), 0)
    started: set[int] = set()

    async def items() -> AsyncIterator[tuple[ChatDelta, Usage]]:
        try:
            async for index, chunk in prepend(first, merged):
                counts.completion_tokens += len(chunk.token_ids)
                counts.total_tokens = counts.prompt_tokens + counts.completion_tokens
                delta = Delta(content=chunk.text)
                if index not in started:
                    started.add(index)
                    delta.role = "assistant"
                lp = _logprobs(engine, chunk.token_ids, chunk.logprobs, chunk.top_logprobs) if req.logprobs else None
                choice = ChunkChoice(index=index, delta=delta, logprobs=lp,
                                     finish_reason=FINISH_REASONS.get(chunk.finish_reason or ""))
                if chunk.text or delta.role or choice.finish_reason is not None or lp is not None:
                    yield ChatDelta(choice, chunk.token_ids, chunk.logprobs), counts
        finally:
            admission.release()
            await merged.aclose()

    gen = items()
    weakref.finalize(gen, admission.release)
    return gen


async def open_stream(engine: Engine, req: ChatCompletionRequest) -> AsyncIterator[bytes]:
    deltas = await stream_deltas(engine, req)

    async def dicts():
        async for delta, counts in deltas:
            yield delta.wire.model_dump(exclude_none=True) | {"finish_reason": delta.wire.finish_reason}, counts

    head = {"id": chat_id(), "object": "chat.completion.chunk", "model": engine.name}
    return sse_events(head, dicts(), req.stream_options is not None and req.stream_options.include_usage)
