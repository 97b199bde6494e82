"""Limits that keep the gateway answering under load: bounded admission, queue and total timeouts.

Every engine is wrapped in a `GuardedEngine`, so the rules hold for every endpoint and backend alike: beyond
`max_inflight` requests per model a new one is refused at once (429 with Retry-After) instead of queueing without
bound; a request that got no first token within `queue_timeout_s`, or runs past `request_timeout_s`, ends with 504 and
leaves the batch.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import AsyncIterator

from prometheus_client import Counter

from glotta.core.errors import ErrorKind, GlottaError

from .engine.protocol import Chunk, Engine, GenerationRequest

REJECTED = Counter("glotta_rejected_requests_total", "Generation requests refused", ["model", "reason"])


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 2 * 1024 * 1024  # TGI's 2 MB
    max_inflight: int = 256  # per model: running batch + waiting queue
    queue_timeout_s: float = 60.0  # until the first token
    request_timeout_s: float = 600.0  # whole generation
    retry_after_s: int = 1


class GuardedEngine:
    """An engine behind the admission limit and the timeouts; everything else passes through."""

    def __init__(self, engine: Engine, limits: Limits) -> None:
        self._engine = engine
        self.limits = limits
        self.inflight = 0

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def stats(self) -> dict[str, int]:
        return {**self._engine.stats(), "inflight": self.inflight}

    def _request_timeout(self) -> GlottaError:
        REJECTED.labels(self._engine.name, "request_timeout").inc()
        return GlottaError(ErrorKind.TIMEOUT,
                           f"generation exceeded the request timeout ({self.limits.request_timeout_s:g} s)")

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        lim = self.limits
        if self.inflight >= lim.max_inflight:
            REJECTED.labels(self._engine.name, "overloaded").inc()
            raise GlottaError(ErrorKind.OVERLOADED, f"model {self._engine.name} is overloaded: {lim.max_inflight} "
                              "requests in flight, retry later", retry_after=lim.retry_after_s)
        self.inflight += 1
        stream = self._engine.generate(request).__aiter__()
        deadline = time.monotonic() + lim.request_timeout_s
        name = self._engine.name
        try:
            try:  # one timer for the wait in the queue (not one per token: that would cost a task each)
                first = await asyncio.wait_for(anext(stream), min(lim.queue_timeout_s, lim.request_timeout_s))
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                if lim.request_timeout_s <= lim.queue_timeout_s:
                    raise self._request_timeout() from None
                REJECTED.labels(name, "queue_timeout").inc()
                raise GlottaError(ErrorKind.TIMEOUT, f"no token within the queue timeout ({lim.queue_timeout_s:g} s)"
                                  ) from None
            yield first
            while True:
                try:  # a non-streaming request gets its tokens in one chunk at the end: wait on the deadline itself
                    wait = anext(stream)
                    chunk = await (wait if request.stream else asyncio.wait_for(wait, deadline - time.monotonic()))
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    raise self._request_timeout() from None
                if time.monotonic() > deadline:
                    raise self._request_timeout()
                yield chunk
        finally:
            self.inflight -= 1
            await stream.aclose()  # a timed-out or abandoned request leaves the batch
