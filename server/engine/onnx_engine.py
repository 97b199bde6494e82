"""The CPU engine: ONNX Runtime over the fused decoder graph, its KV cache in place, with continuous batching.

One worker thread owns the model. Between decoding steps it drops finished and cancelled rows, admits waiting ones
fairly (scheduling.py), reads at most one chunk of prompt tokens, and runs one decoding step for the running rows. So
requests join and leave at step boundaries instead of waiting behind a global lock (Megatron's server), for the whole
batch to finish (static batching) or behind another request's long prompt. Prompts that start like an earlier one
take that start from the prefix cache (prefix_cache.py). ONNX Runtime releases the GIL while it computes, so the
asyncio gateway keeps serving HTTP meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
from pathlib import Path
from typing import AsyncIterator

import numpy as np

from glotta.core.errors import unavailable
from glotta.modeling.engine_graph import engine_graph
from glotta.modeling.model_folder import ModelFolder

from .. import metrics
from .constraints import grammars_for
from .decoder_session import DecoderSession
from .interface import Chunk, GenerationRequest, PromptInfo
from .logits_processors import RowLogits
from .next_token import emit, next_token, score_prompt_chunk
from .prefix_cache import BLOCK, PrefixCache
from .rows import Row, Slots
from .sampling import Sampler
from .scheduling import FairQueue, SchedulerPolicy
from .stopping import TextStopper
from .text_io import IncrementalDetokenizer, encode_prompt

log = logging.getLogger("glotta.engine")


class OnnxEngine:
    """Serves one model folder (`glotta.json`, `tokenizer.json`, `1/model.onnx`)."""

    def __init__(self, model_dir: str | Path, name: str | None = None, precision: str = "fp32",
                 threads: int | None = None, policy: SchedulerPolicy | None = None) -> None:
        folder = ModelFolder.open(model_dir)
        self.name = name or folder.name
        self.spec = folder.spec
        self.tokenizer = folder.tokenizer()
        self.precision = precision
        self.chat_template = folder.chat_template()  # None: chat is refused (or --chat-template)
        self.max_context = folder.max_context
        self.policy = policy or SchedulerPolicy()
        self.model = DecoderSession(engine_graph(model_dir, precision), threads or os.cpu_count() or 1,
                                    self.policy.max_batch, self.max_context)
        self.model.prefill([[self.tokenizer.eod_id or 0]], 0)  # warm-up: the first run allocates; no request pays it
        _ = self.tokenizer.token_bytes, self.tokenizer.special_ids  # the streaming detokenizer's, built now
        mb = self.policy.prefix_cache_mb
        self.prefix = PrefixCache(mb << 20) if mb > 0 else None
        self._waiting: FairQueue[Row] = FairQueue()  # the worker thread's alone
        self._incoming: collections.deque[Row] = collections.deque()  # event loop → worker (append/popleft are atomic)
        self._slots = Slots(self.model.cache)
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.steps = 0
        self._cancelled = 0  # rows dropped because their client went away
        self._admitted, self._waited = 0, 0.0  # rows admitted, and their summed seconds in the queue
        self._batch_size_metric = metrics.BATCH_SIZE.labels(self.name)
        self._queue_wait_metric = metrics.QUEUE_WAIT.labels(self.name)

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

    @property
    def cancelled(self) -> int:
        return self._cancelled + self._waiting.dropped

    def stats(self) -> dict[str, int]:
        p = self.prefix
        return {"waiting": len(self._waiting) + len(self._incoming), "running": len(self._slots), "steps": self.steps,
                "cancelled": self.cancelled, "admitted": self._admitted, "queue_wait_seconds": self._waited,
                "prefix_cache_blocks": 0 if p is None else len(p),
                "prefix_cache_bytes": 0 if p is None else p.used}

    def token_strings(self, token_ids: list[int]) -> list[str]:
        return [self.tokenizer.piece(t) for t in token_ids]

    def detokenize(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        if self._thread is None:
            raise unavailable(f"model {self.name} is not started")
        row = self._enqueue(request, await encode_prompt(self.tokenizer, request, self.max_context))
        try:
            while True:
                item = await row.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            if not row.done:  # the consumer went away: free the slot at the next step boundary
                row.cancelled = True
                self._wake.set()

    # -- request intake (event-loop side) -------------------------------------------------------------------------

    def _enqueue(self, req: GenerationRequest, ids: list[int]) -> Row:
        processors = None
        if RowLogits.needed(req):
            matcher = grammars_for(self.tokenizer).matcher(req.constraint) if req.constraint is not None else None
            processors = RowLogits(req, ids, matcher)
        row = Row(req=req, prompt_ids=ids, loop=asyncio.get_running_loop(), queue=asyncio.Queue(),
                  sampler=Sampler(req.sampling), detok=IncrementalDetokenizer(self.tokenizer, prompt_ids=ids),
                  stopper=TextStopper(req.stop), group=req.group or None,
                  first_key=self.prefix.first_key(ids) if self.prefix is not None else None, processors=processors)
        self._incoming.append(row)  # the worker files it into the fair queue: only it touches that queue
        self._wake.set()
        return row

    # -- worker thread --------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            self._file_incoming()  # what arrived during the last step joins at this boundary
            if not len(self._slots) and not len(self._waiting):
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            out: list[tuple[Row, Chunk | BaseException]] = []
            try:
                self._drop_finished()
                self._admit()
                self._prefill_step(out)
                self._drop_finished()
                if self._slots.decoding:
                    self._decode(out)
            except Exception as e:  # a broken step fails its requests, never the server
                log.exception("engine step failed")
                for row in self._slots.rows:
                    if not row.done:
                        row.done = True
                        out.append((row, RuntimeError(f"generation failed: {e}")))
                self._slots.clear()
            self._deliver(out)
        for row in [*self._slots.rows, *self._waiting, *self._incoming]:
            self._deliver([(row, unavailable("server is shutting down"))])

    def _drop_finished(self) -> None:
        rows, i = self._slots.rows, 0
        while i < len(rows):
            row = rows[i]
            if row.done or row.cancelled:
                self._cancelled += row.cancelled and not row.done
                self._slots.remove(i)  # another row takes slot i: look at it again
            else:
                i += 1

    def _file_incoming(self) -> None:
        while self._incoming:
            self._waiting.push(self._incoming.popleft())

    def _admit(self) -> None:
        """Waiting rows into free slots, fairly; each starts with what the prefix cache holds of its prompt."""
        free = self.policy.max_batch - len(self._slots)
        if free <= 0 or not len(self._waiting):
            return
        held = collections.Counter(r.group for r in self._slots.rows)
        # a prompt whose first block another row is reading right now waits one step and then reuses it (score
        # mode sends every label candidate with the same few-shot prompt at once)
        reading = {r.first_key for r in self._slots.prefilling_rows() if r.first_key is not None}

        def admit(row: Row) -> bool:
            key = row.first_key
            if key is None or self.prefix.has(key):
                return True
            if key in reading:
                return False
            reading.add(key)
            return True

        now = time.monotonic()
        for row in self._waiting.take(free, held, self.policy.row_cap, admit):
            self._queue_wait_metric.observe(now - row.enqueued)
            self._admitted += 1
            self._waited += now - row.enqueued
            slot = self._slots.add(row)
            self.model.cache.ensure(slot + 1, 1)
            if row.first_key is not None:
                self._from_prefix_cache(row, slot)

    def _from_prefix_cache(self, row: Row, slot: int) -> None:
        req = row.req
        if not row.uses_prefix_cache:
            return
        blocks = self.prefix.lookup(row.prompt_ids, need_logprobs=req.prompt_logprobs)
        if not blocks:
            return
        n = len(blocks) * BLOCK
        self.model.cache.ensure(slot + 1, n)
        self.model.cache.write(slot, 0, [np.concatenate(parts, axis=1) for parts in zip(*(b.kv for b in blocks))])
        row.cached = row.length = n
        if req.prompt_logprobs:
            # the logits that score token n come from position n − 1: that token is computed again
            row.length = n - 1
            row.prompt_logprobs = np.concatenate([b.logprobs for b in blocks])[1:n].astype(float).tolist()

    def _prefill_step(self, out: list) -> None:
        """At most `prefill_chunk` prompt tokens: fresh prompts together (right-padded), a started prompt alone."""
        budget = self.policy.prefill_chunk
        rows = self._slots.rows
        i, finished = self._slots.decoding, []
        while i < len(rows) and budget > 0:
            if rows[i].length == 0:
                group, width = [], 0
                while i + len(group) < len(rows) and rows[i + len(group)].length == 0:
                    w = max(width, min(len(rows[i + len(group)].prompt_ids), budget))
                    if group and w * (len(group) + 1) > budget:
                        break
                    group.append(rows[i + len(group)])
                    width = w
                feeds = [r.prompt_ids[: min(len(r.prompt_ids), width)] for r in group]
                starts = [0] * len(group)
            else:
                group = [rows[i]]
                start = rows[i].length
                feeds, starts = [rows[i].prompt_ids[: start + budget]], [start]
            logits, _ = self.model.prefill(feeds, i, starts=starts,
                                           all_logits=[r.req.prompt_logprobs for r in group])
            for row, fed, start, lg in zip(group, feeds, starts, logits):
                budget -= len(fed) - start
                if row.req.prompt_logprobs:
                    score_prompt_chunk(self.tokenizer, row, start, lg)
                row.length = len(fed)
                if not row.prefilling:
                    finished.append((row, lg[-1].copy()))  # the next call reuses the logits buffer
            i += len(group)
        for row, last_logits in finished:
            self._prompt_done(row, last_logits, out)

    def _prompt_done(self, row: Row, logits: np.ndarray, out: list) -> None:
        req = row.req
        if req.prompt_logprobs:  # a one-token prompt has nothing to score
            row.prompt_logprobs = row.prompt_logprobs or []
            row.prompt_top = row.prompt_top or ([] if req.top_logprobs else None)
        if self.prefix is not None and row.uses_prefix_cache:
            slot = self._slots.rows.index(row)
            lps = None
            if req.prompt_logprobs:
                lps = np.array([np.nan, *row.prompt_logprobs], np.float32)
            self.prefix.insert(row.prompt_ids, lambda a, b: self.model.cache.read(slot, a, b), lps)
        prompt = PromptInfo(token_ids=list(row.prompt_ids), logprobs=row.prompt_logprobs, top_logprobs=row.prompt_top,
                            cached_tokens=row.cached)
        if req.max_new_tokens == 0:
            row.done = True
            out.append((row, Chunk(prompt=prompt, finish_reason="length")))
            return
        chunk = self._next_or_error(row, logits)
        if not isinstance(chunk, BaseException):
            chunk.prompt = prompt
        emit(out, row, chunk)
        if not row.done:
            self._slots.promote(row)

    def _decode(self, out: list) -> None:
        rows = self._slots.decoding_rows()
        k = self.policy.speculate
        if k and len(self._slots) == 1 and rows[0].req.sampling.greedy:
            row = rows[0]
            draft = row.draft(min(k, row.req.max_new_tokens - len(row.generated) - 1))
            if draft:
                return self._verify(row, draft, out)
        tokens = np.array([r.generated[-1] for r in rows], np.int64)
        lengths = np.array([r.length for r in rows], np.int64)
        logits = self.model.decode(tokens, lengths)
        greedy = logits.argmax(axis=1)  # one call for the whole batch; rows that sample ignore it
        self.steps += 1
        self._batch_size_metric.observe(len(rows))
        for i, row in enumerate(rows):
            row.length += 1
            emit(out, row, self._next_or_error(row, logits[i], int(greedy[i])))

    def _verify(self, row: Row, draft: list[int], out: list) -> None:
        """One pass over the last token and the draft (speculation.py): each next token is chosen from the logits of
        exactly its prefix, as in `_decode`; drafted tokens stay in the cache while they equal those choices."""
        fed = [row.generated[-1], *draft]
        m, start = len(fed), row.length
        logits = self.model.run(np.array([fed], np.int64), np.arange(start, start + m)[None], np.array([start + m]),
                                (0, 1), np.arange(m))
        self.steps += 1
        self._batch_size_metric.observe(1)
        for j in range(m):
            row.length += 1  # fed[j] is in the cache, and every token before it was chosen
            chunk = self._next_or_error(row, logits[j])
            emit(out, row, chunk)
            if row.done or j == len(draft) or row.generated[-1] != draft[j]:
                return

    def _next_or_error(self, row: Row, logits: np.ndarray, greedy: int | None = None) -> Chunk | BaseException:
        """One row's failure (its sampling, its text) fails that request only, not the batch around it."""
        try:
            return next_token(self.tokenizer, row, logits, greedy)
        except Exception as e:
            log.exception("request failed while choosing its next token")
            row.done = True
            return RuntimeError(f"generation failed: {type(e).__name__}")

    @staticmethod
    def _deliver(out: list[tuple[Row, Chunk | BaseException]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for row, item in out:
            by_loop.setdefault(row.loop, []).append((row.queue, item))
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
