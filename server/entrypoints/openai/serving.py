"""`/v1/completions` logic: engine requests, and the OpenAI choices and usage — built here once, for every transport.

REST answers `complete`'s response; SSE (`open_stream`, in this module) and gRPC (glotta.server.grpc_api) only
format what `stream_choices` yields.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from dataclasses import dataclass, field
from typing import AsyncIterator

from glotta.core.errors import invalid

from ...engine.interface import Chunk, Engine, GenerationRequest, PromptInfo
from ...generation import collect, gather_all, stream
from ..sse import sse_events
from .protocol import CompletionChoice, CompletionRequest, CompletionResponse, Logprobs, Usage
from .request_fields import constraint_of, engine_request

log = logging.getLogger("glotta.server")
FINISH_REASONS = {"eod": "stop", "stop": "stop", "length": "length"}


def _refuse_unsupported(req: CompletionRequest) -> None:
    if req.suffix:
        raise invalid("suffix is not supported (insertion needs a fill-in-the-middle model)", "suffix")
    if req.best_of is not None and req.best_of < req.n:
        raise invalid(f"best_of ({req.best_of}) must be at least n ({req.n})", "best_of")
    if req.stream and (req.best_of or req.n) > req.n:
        raise invalid("best_of above n cannot be streamed: the best completions are known only at the end", "best_of")


def _prompt_text(engine: Engine, prompt: str | list[int]) -> str:
    return prompt if isinstance(prompt, str) else engine.detokenize(prompt)


def to_engine_request(req: CompletionRequest, prompt: str | list[int], choice: int, group: str = "",
                      constraint=None, force_logprobs: bool = False) -> GenerationRequest:
    want_logprobs = req.logprobs is not None
    return engine_request(req, prompt, choice, max_tokens=16 if req.max_tokens is None else req.max_tokens,
                          logprobs=want_logprobs or force_logprobs, top_logprobs=req.logprobs or 0,
                          prompt_logprobs=want_logprobs and req.echo, group=group, constraint=constraint,
                          stream=req.stream)


@dataclass
class Choice:
    """A choice on the wire, and the generated token ids and log-probs it holds (gRPC sends those as tokens)."""

    wire: CompletionChoice
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)


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
        return Choice(wire, list(ids), list(lps or []), list(tops or []))


def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens)


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


async def complete_choices(engine: Engine, req: CompletionRequest) -> tuple[list[Choice], Usage]:
    """Every prompt's `best_of` rows at once (one group: they share the batch fairly with others, and a prompt's
    rows its cached prefix); of each prompt's rows the `n` of highest log-probability, in the order generated."""
    _refuse_unsupported(req)
    prompts, group, n = req.prompts, uuid.uuid4().hex, req.n
    best_of = req.best_of or n
    constraint = constraint_of(req)
    rows = [(pi, p, j) for pi, p in enumerate(prompts) for j in range(best_of)]
    with engine.admit(len(rows)):
        results = await gather_all(*(collect(engine, to_engine_request(req, p, pi * best_of + j, group, constraint,
                                                                       force_logprobs=best_of > n))
                                     for pi, p, j in rows))
    choices, prompt_tokens = [], 0
    for pi, p in enumerate(prompts):
        candidates = results[pi * best_of:(pi + 1) * best_of]
        prompt_tokens += len(candidates[0].prompt_ids)
        if best_of > n:
            best = sorted(range(best_of), key=lambda j: -sum(candidates[j].logprobs))[:n]
            candidates = [candidates[j] for j in sorted(best)]
        text = _prompt_text(engine, p)
        for j, r in enumerate(candidates):
            choices.append(_ChoiceBuilder(engine, req, text, pi * n + j).build(
                r.text, r.token_ids, r.logprobs, r.top_logprobs,
                PromptInfo(r.prompt_ids, r.prompt_logprobs, r.prompt_top_logprobs), r.finish_reason))
    return choices, usage(prompt_tokens, sum(len(r.token_ids) for r in results))


async def complete(engine: Engine, req: CompletionRequest) -> CompletionResponse:
    choices, use = await complete_choices(engine, req)
    return CompletionResponse(id=completion_id(), model=engine.name, choices=[c.wire for c in choices], usage=use)


async def merge_streams(streams: list[AsyncIterator[Chunk]]) -> AsyncIterator[tuple[int, Chunk]]:
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
    _refuse_unsupported(req)
    prompts, group, n = req.prompts, uuid.uuid4().hex, req.n
    constraint = constraint_of(req)
    rows = [(pi, p, j) for pi, p in enumerate(prompts) for j in range(n)]
    builders = [_ChoiceBuilder(engine, req, _prompt_text(engine, p), pi * n + j) for pi, p, j in rows]
    admission = engine.admit(len(rows))  # held until the stream ends, whichever way
    try:
        merged = merge_streams([stream(engine, to_engine_request(req, p, pi * n + j, group, constraint))
                         for pi, p, j in rows])
        first = await anext(merged)
    except BaseException:
        admission.release()
        raise
    counts = usage(0, 0)

    async def items() -> AsyncIterator[tuple[Choice, Usage]]:
        try:
            async for index, chunk in prepend(first, merged):
                if chunk.prompt is not None and index % n == 0:  # a prompt counts once, not once per choice
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


async def prepend(first, rest: AsyncIterator) -> AsyncIterator:
    yield first
    async for x in rest:
        yield x


async def open_stream(engine: Engine, req: CompletionRequest) -> AsyncIterator[bytes]:
    """SSE byte stream ending in `data: [DONE]`; errors after the headers went out travel as an `error` event."""
    choices = await stream_choices(engine, req)

    async def dicts():
        async for choice, counts in choices:
            yield choice.wire.model_dump(), counts

    head = {"id": completion_id(), "object": "text_completion", "model": engine.name}
    return sse_events(head, dicts(), req.stream_options is not None and req.stream_options.include_usage)
