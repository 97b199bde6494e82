"""The operator's limits (flags of `glotta serve`), and the engine guard that enforces the per-model ones.

Every engine is wrapped in a `GuardedEngine`, so the rules hold for every endpoint and backend alike:
- admission counts **rows** (one prompt being generated: what the engine batches and queues). A request is admitted
  whole — all its rows or none — so a 5-prompt `/api` call is one decision: beyond `max_inflight_rows` rows per
  model it is refused at once (429 with Retry-After) instead of queueing without bound, and a request holding more
  rows than the limit itself can never fit: a 400 that says so, not a 429 a retry cannot cure;
- a request that got no first token within `queue_timeout_s`, or runs past `request_timeout_s`, ends with 504 and
  leaves the batch;
- at a stop, once the drain timeout has passed, every generation still open ends with a 503 that says why
  (`abort_all`): an SSE stream gets a final error event, a gRPC call UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from dataclasses import dataclass
from typing import AsyncIterator

from prometheus_client import Counter

from glotta.core.errors import ErrorKind, GlottaError, invalid

from .engine.interface import Chunk, Engine, GenerationRequest

REJECTED = Counter("glotta_rejected_requests_total", "Generation requests refused", ["model", "reason"])


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 2 * 1024 * 1024  # TGI's 2 MB
    max_inflight_rows: int = 256  # per model: prompts in the running batch + waiting queue
    queue_timeout_s: float = 60.0  # until the first token
    request_timeout_s: float = 600.0  # whole generation
    retry_after_s: int = 1
    drain_timeout_s: float = 30.0  # on SIGTERM: how long requests in flight may still finish
    header_timeout_s: float = 10.0  # a connection must send a request's headers within this (slowloris)
    body_timeout_s: float = 30.0  # ... and its body within this once the headers arrived
    max_header_bytes: int = 64 * 1024  # a request's line and headers
    max_connections: int = 1024  # open HTTP connections; beyond it a new one gets 503 and is closed
    max_grpc_rpcs: int = 1024  # gRPC calls at once; beyond it RESOURCE_EXHAUSTED


# the guards that already counted the rows of the request this task serves (see GuardedEngine.admit)
_ADMITTED: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar("glotta_admitted", default=frozenset())


class Admission:
    """Rows held by one request; `release` is idempotent (a stream may end, be closed and be collected)."""

    def __init__(self, guard: "GuardedEngine", rows: int, mark: bool = True) -> None:
        self.guard, self.rows = guard, rows
        self._token = _ADMITTED.set(_ADMITTED.get() | {id(guard)}) if mark else None

    def release(self) -> None:
        if self.rows:
            self.guard.inflight -= self.rows
            self.rows = 0

    def __enter__(self) -> "Admission":
        return self

    def __exit__(self, *_) -> None:
        self.release()
        if self._token is not None:
            _ADMITTED.reset(self._token)


class _Stream:
    """One open generation: the task consuming it, and whether that task is waiting inside the engine now."""

    __slots__ = ("task", "waiting")

    def __init__(self, task: asyncio.Task | None) -> None:
        self.task, self.waiting = task, False


class GuardedEngine:
    """An engine behind the admission limit, the timeouts and the drain; everything else passes through."""

    def __init__(self, engine: Engine, limits: Limits) -> None:
        self._engine = engine
        self.limits = limits
        self.inflight = 0  # rows admitted and not finished
        self._streams: set[_Stream] = set()
        self._abort: GlottaError | None = None

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def stats(self) -> dict[str, int]:
        return {**self._engine.stats(), "inflight": self.inflight}

    def admit(self, rows: int, mark: bool = True) -> Admission:
        """Hold `rows` rows for one request (all or none), or refuse it: 400 if it can never fit, 429 if not now.
        Generations started in this task (and the tasks it starts) while the admission is held count against it."""
        lim, name = self.limits, self._engine.name
        if self._abort is not None:
            raise self._abort
        if rows > lim.max_inflight_rows:
            REJECTED.labels(name, "too_many_rows").inc()
            raise invalid(f"this request holds {rows} prompts (rows) but model {name} admits at most "
                          f"{lim.max_inflight_rows} rows in flight: send at most {lim.max_inflight_rows}", "prompt")
        if self.inflight + rows > lim.max_inflight_rows:
            REJECTED.labels(name, "overloaded").inc()
            raise GlottaError(ErrorKind.OVERLOADED, f"model {name} is overloaded: {self.inflight} of "
                              f"{lim.max_inflight_rows} rows in flight, retry later", retry_after=lim.retry_after_s)
        self.inflight += rows
        return Admission(self, rows, mark)

    def abort_all(self, error: GlottaError) -> int:
        """End every open generation with `error` (and refuse new ones); returns how many were open."""
        self._abort = error
        for s in list(self._streams):
            if s.waiting and s.task is not None:  # waiting for a token: wake it; the others see the error next time
                s.task.cancel()
        return len(self._streams)

    def _request_timeout(self) -> GlottaError:
        REJECTED.labels(self._engine.name, "request_timeout").inc()
        return GlottaError(ErrorKind.TIMEOUT,
                           f"generation exceeded the request timeout ({self.limits.request_timeout_s:g} s)")

    async def _next(self, stream: AsyncIterator[Chunk], state: _Stream, timeout: float | None) -> Chunk:
        if self._abort is not None:
            raise self._abort
        state.waiting = True
        try:
            wait = anext(stream)
            return await (wait if timeout is None else asyncio.wait_for(wait, timeout))
        except asyncio.CancelledError:
            if self._abort is None:
                raise
            if state.task is not None and hasattr(state.task, "uncancel"):  # Python ≥ 3.11
                state.task.uncancel()
            raise self._abort from None
        finally:
            state.waiting = False

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        lim, name = self.limits, self._engine.name
        own = None if id(self) in _ADMITTED.get() else self.admit(1, mark=False)  # a caller that did not admit
        state = _Stream(asyncio.current_task())
        self._streams.add(state)
        stream = self._engine.generate(request).__aiter__()
        deadline = time.monotonic() + lim.request_timeout_s
        try:
            try:  # one timer for the wait in the queue (not one per token: that would cost a task each)
                first = await self._next(stream, state, min(lim.queue_timeout_s, lim.request_timeout_s))
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
                    chunk = await self._next(stream, state, None if request.stream else deadline - time.monotonic())
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    raise self._request_timeout() from None
                if time.monotonic() > deadline:
                    raise self._request_timeout()
                yield chunk
        finally:
            self._streams.discard(state)
            if own is not None:
                own.release()
            await stream.aclose()  # a timed-out or abandoned request leaves the batch
