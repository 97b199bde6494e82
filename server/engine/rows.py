"""The engine's rows (one per prompt being served) and the cache slots they hold.

Rows that decode hold slots 0..d−1, so that one step binds one contiguous view of the cache; rows still reading
their prompt (chunked prefill) hold the slots after them. A row that finishes its prompt swaps into slot d and d
grows; a row that leaves is replaced by the last row of its part (and the decoding part, shrinking, takes the last
prompt-reading row), so both parts stay contiguous with at most two row copies.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Hashable

from .decoder_session import KVCache
from .interface import Chunk, GenerationRequest
from .logits_processors import RowLogits
from .sampling import Sampler
from .speculation import NgramDrafter
from .stopping import TextStopper
from .text_io import IncrementalDetokenizer


@dataclass(eq=False)
class Row:
    req: GenerationRequest
    prompt_ids: list[int]
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    sampler: Sampler
    detok: IncrementalDetokenizer
    stopper: TextStopper
    group: Hashable = None  # the request it belongs to (fair admission); the row itself when alone
    first_key: int | None = None  # prefix-cache key of its first prompt block
    enqueued: float = field(default_factory=time.monotonic)
    generated: list[int] = field(default_factory=list)
    length: int = 0  # tokens in its cache slot
    cached: int = 0  # prompt tokens taken from the prefix cache
    prompt_logprobs: list[float] | None = None  # gathered over the prefill chunks
    prompt_top: list[dict[str, float]] | None = None
    pending: Chunk | None = None  # a non-streaming request's tokens since its first one
    drafter: NgramDrafter | None = None  # made at its first speculative step
    processors: RowLogits | None = None  # logit_bias, penalties, the grammar's mask: what the request asks
    cancelled: bool = False
    done: bool = False

    def __post_init__(self) -> None:
        if self.group is None:
            self.group = id(self)

    @property
    def prefilling(self) -> bool:
        return self.length < len(self.prompt_ids)

    def draft(self, k: int) -> list[int]:
        """Up to k tokens likely to follow (speculation.py), from the prompt and what was generated so far."""
        if self.drafter is None:
            self.drafter = NgramDrafter()
            return self.drafter.propose([*self.prompt_ids, *self.generated], k)
        return self.drafter.propose(self.generated[len(self.drafter.tokens) - len(self.prompt_ids):], k)

    @property
    def uses_prefix_cache(self) -> bool:
        """Prompt top alternatives are not kept in the cache: a prompt that wants them is computed whole."""
        return not (self.req.prompt_logprobs and self.req.top_logprobs)


class Slots:
    def __init__(self, cache: KVCache) -> None:
        self.cache = cache
        self.rows: list[Row] = []
        self.decoding = 0

    def __len__(self) -> int:
        return len(self.rows)

    def decoding_rows(self) -> list[Row]:
        return self.rows[: self.decoding]

    def prefilling_rows(self) -> list[Row]:
        return self.rows[self.decoding :]

    def add(self, row: Row) -> int:
        self.rows.append(row)
        return len(self.rows) - 1

    def clear(self) -> None:
        self.rows, self.decoding = [], 0

    def remove(self, i: int) -> None:
        rows = self.rows
        if i < self.decoding:
            last = self.decoding - 1
            if i != last:
                self._move(last, i)
            if len(rows) - 1 > last:  # the decoding part shrinks: the last prompt-reading row takes its end
                self._move(len(rows) - 1, last)
            self.decoding -= 1
        elif i != len(rows) - 1:
            self._move(len(rows) - 1, i)
        rows.pop()

    def promote(self, row: Row) -> None:
        """A row whose prompt is all in the cache starts decoding."""
        i, d = self.rows.index(row), self.decoding
        if i != d:
            self.cache.swap(i, d, max(row.length, self.rows[d].length))
            self.rows[i], self.rows[d] = self.rows[d], self.rows[i]
        self.decoding += 1

    def _move(self, src: int, dst: int) -> None:
        self.cache.move(src, dst, self.rows[src].length)
        self.rows[dst] = self.rows[src]
