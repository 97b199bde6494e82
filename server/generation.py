"""Backend-agnostic request plumbing shared by every endpoint: metrics around an engine stream, and collecting it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

from . import metrics
from .engine.interface import Chunk, Engine, GenerationRequest


@dataclass
class Completion:
    """A finished generation, gathered from the stream."""

    prompt_ids: list[int] = field(default_factory=list)
    prompt_logprobs: list[float] | None = None
    prompt_top_logprobs: list[dict[str, float]] | None = None
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    finish_reason: str | None = None


async def stream(engine: Engine, request: GenerationRequest) -> AsyncIterator[Chunk]:
    """The engine's stream, with TTFT, inter-token latency, token counts and end-to-end latency recorded."""
    start = time.perf_counter()
    last = None
    n_tokens = 0
    model = engine.name
    async for chunk in engine.generate(request):
        now = time.perf_counter()
        if chunk.prompt is not None:
            metrics.PROMPT_TOKENS.labels(model).inc(len(chunk.prompt.token_ids))
            metrics.PROMPT_TOKENS_CACHED.labels(model).inc(chunk.prompt.cached_tokens)
        if chunk.token_ids:
            n_tokens += len(chunk.token_ids)
            if last is None:
                metrics.TTFT.labels(model).observe(now - start)
            else:
                metrics.ITL.labels(model).observe(now - last)
            last = now
        yield chunk
    metrics.GENERATION_TOKENS.labels(model).inc(n_tokens)
    metrics.E2E.labels(model).observe(time.perf_counter() - start)


async def gather_all(*aws):
    """`asyncio.gather`, but the first failure cancels the siblings instead of leaving them generating."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def collect(engine: Engine, request: GenerationRequest) -> Completion:
    out = Completion()
    async for chunk in stream(engine, request):
        if chunk.prompt is not None:
            out.prompt_ids = chunk.prompt.token_ids
            out.prompt_logprobs = chunk.prompt.logprobs
            out.prompt_top_logprobs = chunk.prompt.top_logprobs
        out.token_ids += chunk.token_ids
        out.text += chunk.text
        if chunk.logprobs:
            out.logprobs += chunk.logprobs
        if chunk.top_logprobs:
            out.top_logprobs += chunk.top_logprobs
        if chunk.finish_reason is not None:
            out.finish_reason = chunk.finish_reason
    return out
