"""`/v1/completions` logic: engine requests, and the OpenAI choices and usage — built here once, for every transport.

REST answers `complete`'s response; SSE (`open_stream`, in this module) and gRPC (glotta.server.grpc_api) only
format what `stream_choices` yields.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import AsyncIterator

from glotta.core.errors import ErrorKind, GlottaError

from ...bounds import SEED_MAX
from ...engine.interface import Chunk, Engine, GenerationRequest, PromptInfo, SamplingParams, StopConditions
from ...error_responses import body as error_body
from ...generation import collect, gather_all, stream
from .protocol import CompletionChoice, CompletionRequest, CompletionResponse, Logprobs, Usage

log = logging.getLogger("glotta.server")
FINISH_REASONS = {"eod": "stop", "stop": "stop", "length": "length"}


def to_engine_request(req: CompletionRequest, prompt: str, index: int, group: str = "") -> GenerationRequest:
    temperature = 1.0 if req.temperature is None else req.temperature
    want_logprobs = req.logprobs is not None
    return GenerationRequest(
        prompt=prompt,
        max_new_tokens=16 if req.max_tokens is None else req.max_tokens,
        sampling=SamplingParams(
            temperature=temperature,
            top_k=req.top_k or 0,
            top_p=0.0 if req.top_p in (None, 1.0) else req.top_p,  # OpenAI's 1.0 means "no nucleus"
            seed=None if req.seed is None else (req.seed + index) % (SEED_MAX + 1),
        ),
        stop=StopConditions(stop_on_eod=not req.ignore_eos, stop_strings=req.stop_strings),
        logprobs=want_logprobs,
        top_logprobs=req.logprobs or 0,
        prompt_logprobs=want_logprobs and req.echo,
        stream=req.stream,
        group=group,
    )


@dataclass
class Choice:
    """A choice on the wire, and the generated token ids and log-probs it holds (gRPC sends those as tokens)."""

    wire: CompletionChoice
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


class _ChoiceBuilder:
    """Turns one prompt's engine output — the whole of it, or each streamed chunk — into OpenAI choices."""

    def __init__(self, engine: Engine, req: CompletionRequest, prompt: str, index: int) -> None:
        self.engine, self.req, self.prompt, self.index = engine, req, prompt, index
        self.offset = 0 if req.echo else len(prompt)  # text_offset of the next token

    def build(self, text: str, ids: list[int], lps: list[float] | None, tops: list | None,
              prompt: PromptInfo | None, finish: str | None) -> Choice:
        req, lp = self.req, None
        echo = prompt is not None and req.echo
        if req.logprobs is not None:
            all_ids, all_lps = list(ids), list(lps or [])
            all_tops = list(tops or []) if req.logprobs else None
            if echo:
                all_ids = prompt.token_ids + all_ids
                all_lps = [None, *(prompt.logprobs or []), *all_lps]
                if all_tops is not None:
                    all_tops = [None, *(prompt.top_logprobs or []), *all_tops]
            tokens = self.engine.token_strings(all_ids)
            offsets = []
            for t in tokens:
                offsets.append(self.offset)
                self.offset += len(t)
            lp = Logprobs(tokens=tokens, token_logprobs=all_lps, top_logprobs=all_tops, text_offset=offsets)
        wire = CompletionChoice(index=self.index, text=(self.prompt if echo else "") + text, logprobs=lp,
                                finish_reason=FINISH_REASONS.get(finish or ""))
        return Choice(wire, list(ids), list(lps or []))


def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens)


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


async def complete_choices(engine: Engine, req: CompletionRequest) -> tuple[list[Choice], Usage]:
    prompts, group = req.prompts, uuid.uuid4().hex  # one group: the prompts share the batch fairly with others
    with engine.admit(len(prompts)):
        results = await gather_all(*(collect(engine, to_engine_request(req, p, i, group))
                                     for i, p in enumerate(prompts)))
    choices = [
        _ChoiceBuilder(engine, req, p, i).build(
            r.text, r.token_ids, r.logprobs, r.top_logprobs,
            PromptInfo(r.prompt_ids, r.prompt_logprobs, r.prompt_top_logprobs), r.finish_reason)
        for i, (p, r) in enumerate(zip(prompts, results))
    ]
    return choices, usage(sum(len(r.prompt_ids) for r in results), sum(len(r.token_ids) for r in results))


async def complete(engine: Engine, req: CompletionRequest) -> CompletionResponse:
    choices, use = await complete_choices(engine, req)
    return CompletionResponse(id=completion_id(), model=engine.name, choices=[c.wire for c in choices], usage=use)


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


async def stream_choices(engine: Engine, req: CompletionRequest) -> AsyncIterator[tuple[Choice, Usage]]:
    """Each streamed choice with the usage so far (final once every choice has its finish_reason). The first item
    is computed before this returns, so a request the engine rejects fails before any byte goes out."""
    prompts, group = req.prompts, uuid.uuid4().hex
    builders = [_ChoiceBuilder(engine, req, p, i) for i, p in enumerate(prompts)]
    admission = engine.admit(len(prompts))  # held until the stream ends, whichever way
    try:
        merged = _merge([stream(engine, to_engine_request(req, p, i, group)) for i, p in enumerate(prompts)])
        first = await anext(merged)
    except BaseException:
        admission.release()
        raise
    counts = usage(0, 0)

    async def items() -> AsyncIterator[tuple[Choice, Usage]]:
        try:
            async for index, chunk in _prepend(first, merged):
                if chunk.prompt is not None:
                    counts.prompt_tokens += len(chunk.prompt.token_ids)
                counts.completion_tokens += len(chunk.token_ids)
                counts.total_tokens = counts.prompt_tokens + counts.completion_tokens
                choice = builders[index].build(chunk.text, chunk.token_ids, chunk.logprobs, chunk.top_logprobs,
                                               chunk.prompt, chunk.finish_reason)
                if choice.wire.text or choice.wire.logprobs is not None or choice.wire.finish_reason is not None:
                    yield choice, counts
        finally:
            admission.release()
            await merged.aclose()

    gen = items()
    weakref.finalize(gen, admission.release)  # a stream dropped before its first item (client gone) releases too
    return gen


async def _prepend(first, rest: AsyncIterator) -> AsyncIterator:
    yield first
    async for x in rest:
        yield x


def _sse(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


async def open_stream(engine: Engine, req: CompletionRequest) -> AsyncIterator[bytes]:
    """SSE byte stream ending in `data: [DONE]`; errors after the headers went out travel as an `error` event."""
    choices = await stream_choices(engine, req)
    return _sse_events(engine.name, req, choices)


async def _sse_events(model: str, req: CompletionRequest, choices) -> AsyncIterator[bytes]:
    head = {"id": completion_id(), "object": "text_completion", "created": int(time.time()), "model": model}
    counts = None
    try:
        async for choice, counts in choices:
            yield _sse(head | {"choices": [choice.wire.model_dump()]})
        if counts is not None and req.stream_options is not None and req.stream_options.include_usage:
            yield _sse(head | {"choices": [], "usage": counts.model_dump()})
    except GlottaError as e:
        yield _sse(error_body("openai", e))
    except Exception as e:
        log.exception("stream failed")
        yield _sse(error_body("openai", GlottaError(ErrorKind.INTERNAL, f"generation failed: {type(e).__name__}")))
    yield b"data: [DONE]\n\n"
