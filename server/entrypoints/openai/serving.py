"""`/v1/completions` logic: map to engine requests, gather or stream the choices, shape OpenAI's objects."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import AsyncIterator

from ...engine.protocol import Chunk, Engine, EngineError, GenerationRequest, SamplingParams, StopConditions
from ...generation import Completion, collect, gather_all, stream
from ...limits import RequestTimeout
from .protocol import CompletionChoice, CompletionRequest, CompletionResponse, Logprobs, Usage

log = logging.getLogger("glotta.server")
FINISH_REASONS = {"eod": "stop", "stop": "stop", "length": "length"}


def to_engine_request(req: CompletionRequest, prompt: str, index: int) -> GenerationRequest:
    temperature = 1.0 if req.temperature is None else req.temperature
    want_logprobs = req.logprobs is not None
    return GenerationRequest(
        prompt=prompt,
        max_new_tokens=16 if req.max_tokens is None else req.max_tokens,
        sampling=SamplingParams(
            temperature=temperature,
            top_k=req.top_k or 0,
            top_p=0.0 if req.top_p in (None, 1.0) else req.top_p,  # OpenAI's 1.0 means "no nucleus"
            seed=None if req.seed is None else req.seed + index,
        ),
        stop=StopConditions(stop_on_eod=not req.ignore_eos, stop_strings=req.stop_strings),
        logprobs=want_logprobs,
        top_logprobs=req.logprobs or 0,
        prompt_logprobs=want_logprobs and req.echo,
        stream=req.stream,
    )


def _logprobs(engine: Engine, ids: list[int], lps: list, tops: list | None, offset: int) -> Logprobs:
    tokens = engine.token_strings(ids)
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t)
    return Logprobs(tokens=tokens, token_logprobs=lps, top_logprobs=tops, text_offset=offsets)


def _choice(engine: Engine, req: CompletionRequest, prompt: str, index: int, c: Completion) -> CompletionChoice:
    lp = None
    if req.logprobs is not None:
        ids, lps, tops = c.token_ids, list(c.logprobs), list(c.top_logprobs) if req.logprobs else None
        if req.echo:
            ids = c.prompt_ids + ids
            lps = [None, *(c.prompt_logprobs or []), *lps]
            if tops is not None:
                tops = [None, *(c.prompt_top_logprobs or []), *tops]
        lp = _logprobs(engine, ids, lps, tops, 0 if req.echo else len(prompt))
    text = (prompt if req.echo else "") + c.text
    return CompletionChoice(index=index, text=text, logprobs=lp, finish_reason=FINISH_REASONS.get(c.finish_reason or ""))


async def complete(engine: Engine, req: CompletionRequest) -> CompletionResponse:
    prompts = req.prompts
    results = await gather_all(*(collect(engine, to_engine_request(req, p, i)) for i, p in enumerate(prompts)))
    prompt_tokens = sum(len(r.prompt_ids) for r in results)
    completion_tokens = sum(len(r.token_ids) for r in results)
    return CompletionResponse(
        id=f"cmpl-{uuid.uuid4().hex}",
        model=engine.name,
        choices=[_choice(engine, req, p, i, r) for i, (p, r) in enumerate(zip(prompts, results))],
        usage=Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
    )


async def _merge(streams: list[AsyncIterator[Chunk]]) -> AsyncIterator[tuple[int, Chunk]]:
    """Interleave several prompts' streams as their chunks arrive."""
    if len(streams) == 1:
        async for c in streams[0]:
            yield 0, c
        return
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(i: int, s: AsyncIterator[Chunk]) -> None:
        try:
            async for c in s:
                await queue.put((i, c))
        except Exception as e:  # handed to the consumer, which raises it
            await queue.put((i, e))
        finally:
            await queue.put((i, done))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            i, item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()


def _sse(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


async def open_stream(engine: Engine, req: CompletionRequest) -> AsyncIterator[bytes]:
    """SSE byte stream. The first chunk is awaited here, so a request the engine rejects still gets a 4xx."""
    prompts = req.prompts
    merged = _merge([stream(engine, to_engine_request(req, p, i)) for i, p in enumerate(prompts)])
    first = await anext(merged)  # raises EngineError before any byte is sent
    return _sse_events(engine, req, prompts, first, merged)


async def _sse_events(engine: Engine, req: CompletionRequest, prompts: list[str], first, merged) -> AsyncIterator[bytes]:
    cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    usage = Usage()
    offsets = [0 if req.echo else len(p) for p in prompts]

    def event(index: int, text: str, lp: Logprobs | None, finish: str | None) -> bytes:
        choice = CompletionChoice(index=index, text=text, logprobs=lp, finish_reason=FINISH_REASONS.get(finish or ""))
        body = {"id": cid, "object": "text_completion", "created": created, "model": engine.name}
        return _sse(body | {"choices": [choice.model_dump()]})

    async def items():
        yield first
        async for x in merged:
            yield x

    try:
        async for index, chunk in items():
            text, lp = chunk.text, None
            if chunk.prompt is not None:
                usage.prompt_tokens += len(chunk.prompt.token_ids)
                if req.echo:
                    text = prompts[index] + text
            usage.completion_tokens += len(chunk.token_ids)
            if req.logprobs is not None:
                ids, lps = list(chunk.token_ids), list(chunk.logprobs or [])
                tops = list(chunk.top_logprobs or []) if req.logprobs else None
                if chunk.prompt is not None and req.echo:
                    ids = chunk.prompt.token_ids + ids
                    lps = [None, *(chunk.prompt.logprobs or []), *lps]
                    if tops is not None:
                        tops = [None, *(chunk.prompt.top_logprobs or []), *tops]
                lp = _logprobs(engine, ids, lps, tops, offsets[index])
                offsets[index] = lp.text_offset[-1] + len(lp.tokens[-1]) if lp.tokens else offsets[index]
            if text or lp is not None or chunk.finish_reason is not None:
                yield event(index, text, lp, chunk.finish_reason)
        if req.stream_options is not None and req.stream_options.include_usage:
            usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
            body = {"id": cid, "object": "text_completion", "created": created, "model": engine.name}
            yield _sse(body | {"choices": [], "usage": usage.model_dump()})
    except EngineError as e:  # after the headers went out, errors travel as an SSE event
        yield _sse({"error": {"message": e.message, "type": "invalid_request_error", "param": e.param}})
    except RequestTimeout as e:
        yield _sse({"error": {"message": str(e), "type": "timeout", "param": None}})
    except Exception as e:
        log.exception("stream failed")
        yield _sse({"error": {"message": f"generation failed: {type(e).__name__}", "type": "internal_error"}})
    yield b"data: [DONE]\n\n"
