"""The CPU engine: ONNX Runtime over the fused decoder graph, its KV cache in place, with continuous batching.

One worker thread owns the model. Between decoding steps it drops finished and cancelled rows and prefills newly
arrived requests into the running batch, so requests join and leave at step boundaries instead of waiting behind a
global lock (Megatron's server) or for the whole batch to finish (static batching). ONNX Runtime releases the GIL while
it computes, so the asyncio gateway keeps serving HTTP meanwhile. Row i of the running batch is slot i of the cache
(decoder_session.py).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

import numpy as np

from glotta.core.errors import unavailable
from glotta.core.model_folder import ModelFolder

from .. import metrics
from .decoder_session import DecoderSession
from .engine_graph import engine_graph
from .protocol import Chunk, GenerationRequest, PromptInfo
from .sampling import Sampler, log_softmax, top_logprobs
from .stopping import TextStopper
from .tokenizer import IncrementalDetokenizer, encode_prompt

log = logging.getLogger("glotta.engine")


@dataclass(eq=False)
class _Seq:
    req: GenerationRequest
    prompt_ids: list[int]
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    sampler: Sampler
    detok: IncrementalDetokenizer
    stopper: TextStopper
    generated: list[int] = field(default_factory=list)
    length: int = 0  # tokens in its cache slot
    pending: Chunk | None = None  # a non-streaming request's tokens since its first one
    cancelled: bool = False
    done: bool = False


class OnnxEngine:
    """Serves one model folder (`glotta.json`, `tokenizer.json`, `1/model.onnx`)."""

    def __init__(
        self,
        model_dir: str | Path,
        name: str | None = None,
        int8: bool = False,
        threads: int | None = None,
        max_batch: int = 64,
        prefill_tokens: int = 4096,
    ) -> None:
        folder = ModelFolder.open(model_dir)
        self.name = name or folder.name
        self.meta = folder.meta
        self.tokenizer = folder.tokenizer()
        self.precision = "int8" if int8 else "fp32"
        self.max_context = folder.max_context
        self.model = DecoderSession(engine_graph(model_dir, int8), threads or os.cpu_count() or 1, max_batch,
                                    self.max_context)
        self.model.prefill([[self.tokenizer.eod_id]], 0)  # warm-up: the first run allocates; no request pays it
        _ = self.tokenizer.token_bytes, self.tokenizer.special_ids  # the streaming detokenizer's, built now
        self.max_batch = max_batch
        self.prefill_tokens = prefill_tokens
        self._waiting: collections.deque[_Seq] = collections.deque()
        self._running: list[_Seq] = []  # row i holds cache slot i
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.cancelled = 0  # requests dropped because their client went away
        self._batch_size_metric = metrics.BATCH_SIZE.labels(self.name)

    # -- protocol -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name=f"engine-{self.name}", daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
            self._thread = None

    def ready(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict[str, int]:
        return {"waiting": len(self._waiting), "running": len(self._running), "steps": self.steps,
                "cancelled": self.cancelled}

    def token_strings(self, token_ids: list[int]) -> list[str]:
        return [self.tokenizer.piece(t) for t in token_ids]

    def detokenize(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        seq = self._admit(request)
        try:
            while True:
                item = await seq.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            if not seq.done:  # the consumer went away: free the slot at the next step boundary
                seq.cancelled = True
                self._wake.set()

    # -- request intake (event-loop side) -------------------------------------------------------------------------

    def _admit(self, req: GenerationRequest) -> _Seq:
        if self._thread is None:
            raise unavailable(f"model {self.name} is not started")
        ids = encode_prompt(self.tokenizer, req, self.max_context)
        seq = _Seq(
            req=req,
            prompt_ids=ids,
            loop=asyncio.get_running_loop(),
            queue=asyncio.Queue(),
            sampler=Sampler(req.sampling),
            detok=IncrementalDetokenizer(self.tokenizer),
            stopper=TextStopper(req.stop),
        )
        self._waiting.append(seq)
        self._wake.set()
        return seq

    # -- worker thread --------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            if not self._running and not self._waiting:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            out: list[tuple[_Seq, Chunk | BaseException]] = []
            admitted: list[_Seq] = []
            try:
                self._drop_finished()
                admitted = self._take_waiting()
                if admitted:
                    self._prefill(admitted, out)
                    self._drop_finished()
                if self._running:
                    self._decode(out)
            except Exception as e:  # a broken step fails its requests, never the server
                log.exception("engine step failed")
                for s in {*self._running, *admitted}:
                    if not s.done:
                        s.done = True
                        out.append((s, RuntimeError(f"generation failed: {e}")))
                self._running = []
            self._deliver(out)
        for s in [*self._running, *self._waiting]:
            self._deliver([(s, unavailable("server is shutting down"))])

    def _take_waiting(self) -> list[_Seq]:
        taken: list[_Seq] = []
        width = 0
        while self._waiting and len(self._running) + len(taken) < self.max_batch:
            s = self._waiting[0]
            if s.cancelled:
                self._waiting.popleft()
                self.cancelled += 1
                continue
            w = max(width, len(s.prompt_ids))
            if taken and w * (len(taken) + 1) > self.prefill_tokens:
                break
            taken.append(self._waiting.popleft())
            width = w
        return taken

    def _drop_finished(self) -> None:
        """Free the slots of finished and cancelled rows; the last row moves into each freed slot."""
        rows = self._running
        i = 0
        while i < len(rows):
            s = rows[i]
            if not (s.done or s.cancelled):
                i += 1
                continue
            if s.cancelled and not s.done:
                self.cancelled += 1
            last = rows.pop()
            if i < len(rows):
                self.model.cache.move(len(rows), i, last.length)
                rows[i] = last

    def _prefill(self, seqs: list[_Seq], out: list) -> None:
        first = len(self._running)
        logits, lengths = self.model.prefill([s.prompt_ids for s in seqs], first,
                                             all_logits=[s.req.prompt_logprobs for s in seqs])
        self._running.extend(seqs)  # rows that finish here leave at the next _drop_finished
        for i, s in enumerate(seqs):
            s.length = int(lengths[i])
            prompt = PromptInfo(token_ids=list(s.prompt_ids))
            if s.req.prompt_logprobs:
                n = len(s.prompt_ids)
                lp = log_softmax(logits[i][: n - 1])
                targets = np.asarray(s.prompt_ids[1:], np.int64)
                prompt.logprobs = lp[np.arange(n - 1), targets].astype(float).tolist()
                if s.req.top_logprobs:
                    prompt.top_logprobs = [self._top(row, s.req.top_logprobs) for row in lp]
            if s.req.max_new_tokens == 0:
                s.done = True
                out.append((s, Chunk(prompt=prompt, finish_reason="length")))
                continue
            chunk = self._next_token_or_error(s, logits[i][-1])
            if not isinstance(chunk, BaseException):
                chunk.prompt = prompt
            self._emit(out, s, chunk)

    def _decode(self, out: list) -> None:
        tokens = np.array([s.generated[-1] for s in self._running], np.int64)
        lengths = np.array([s.length for s in self._running], np.int64)
        logits = self.model.decode(tokens, lengths)
        greedy = logits.argmax(axis=1)  # one call for the whole batch; rows that sample ignore it
        for s in self._running:
            s.length += 1
        self.steps += 1
        self._batch_size_metric.observe(len(tokens))
        for i, s in enumerate(self._running):
            self._emit(out, s, self._next_token_or_error(s, logits[i], int(greedy[i])))

    @staticmethod
    def _emit(out: list, s: _Seq, item: Chunk | BaseException) -> None:
        """Queue a chunk for delivery. A non-streaming request gets its first token (time to first token stays
        measurable) and then one chunk at the end: waking its consumer at every step costs the event loop (and the
        GIL this thread needs) more than the step's arithmetic at batch 16."""
        if isinstance(item, BaseException):
            s.pending = None
            out.append((s, item))
            return
        if s.pending is not None:
            item = s.pending.absorb(item)
            s.pending = None
        if s.req.stream or item.finish_reason is not None or len(s.generated) <= 1:
            out.append((s, item))
        else:
            s.pending = item

    def _next_token_or_error(self, s: _Seq, logits: np.ndarray, greedy: int | None = None) -> Chunk | BaseException:
        """One row's failure (its sampling, its text) fails that request only, not the batch around it."""
        try:
            return self._next_token(s, logits, greedy)
        except Exception as e:
            log.exception("request failed while choosing its next token")
            s.done = True
            return RuntimeError(f"generation failed: {type(e).__name__}")

    def _next_token(self, s: _Seq, logits: np.ndarray, greedy: int | None = None) -> Chunk:
        req = s.req
        last = s.generated[-1] if s.generated else s.prompt_ids[-1]
        if req.prevent_newline_after_colon and last in self.tokenizer.colon_ids:
            logits = logits.copy()
            logits[self.tokenizer.newline_ids] = -1e10
            greedy = None
        token = greedy if greedy is not None and req.sampling.greedy else s.sampler.choose(logits)
        s.generated.append(token)
        chunk = Chunk(token_ids=[token])
        if req.logprobs or req.top_logprobs:
            lp = log_softmax(logits[None, :])[0]
            chunk.logprobs = [float(lp[token])]
            if req.top_logprobs:
                chunk.top_logprobs = [self._top(lp, req.top_logprobs)]
        if token == self.tokenizer.eod_id and req.stop.stop_on_eod:
            chunk.text = s.stopper.feed(s.detok.flush()) + s.stopper.flush()
            chunk.finish_reason = "eod"
        else:
            chunk.text = s.stopper.feed(s.detok.add(token))
            if s.stopper.stopped:
                chunk.finish_reason = "stop"
            elif len(s.generated) >= req.max_new_tokens:
                chunk.text += s.stopper.feed(s.detok.flush()) + s.stopper.flush()
                chunk.finish_reason = "stop" if s.stopper.stopped else "length"
        if chunk.finish_reason is not None:
            s.done = True
        return chunk

    def _top(self, lp_row: np.ndarray, n: int) -> dict[str, float]:
        return {self.tokenizer.piece(t): v for t, v in top_logprobs(lp_row, n)}

    @staticmethod
    def _deliver(out: list[tuple[_Seq, Chunk | BaseException]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for s, item in out:
            by_loop.setdefault(s.loop, []).append((s.queue, item))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, items)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                pass


def _put_all(items: list[tuple[asyncio.Queue, object]]) -> None:
    for q, item in items:
        q.put_nowait(item)


def load_engine(model_dir: str | Path, **kwargs) -> OnnxEngine:
    t = time.perf_counter()
    engine = OnnxEngine(model_dir, **kwargs)
    log.info("loaded %s (%s) in %.2fs", engine.name, engine.precision, time.perf_counter() - t)
    return engine
