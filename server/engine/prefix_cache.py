"""Automatic prefix caching: the KV cache of prompt blocks, reused by any later prompt that starts the same way.

Blocks of `BLOCK` tokens are keyed by a hash chain (the key of a block covers every token before it), as vLLM's
automatic prefix caching does, so a lookup walks the prompt block by block and stops at the first miss. Each entry
keeps its tokens (a hash collision can never serve a wrong prefix), a copy of its keys/values for every layer, and,
when the prompt that wrote it was scored, the log-prob of each of its tokens given what precedes it — so scoring
requests (score mode) reuse the shared few-shot prompt as well and compute only their own suffix.

Memory is bounded; the least recently used block goes first. A lookup refreshes a chain from its deepest block to its
root, so a parent is always more recent than its children and eviction takes leaves before the blocks they extend.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

BLOCK = 16


@dataclass
class Block:
    tokens: tuple[int, ...]
    parent: int | None
    kv: list[np.ndarray]  # per cache buffer: [KV, BLOCK, D]
    logprobs: np.ndarray | None  # [BLOCK]: log-prob of each token given its prefix (NaN for the prompt's first)
    nbytes: int


class PrefixCache:
    def __init__(self, capacity_bytes: int) -> None:
        self.capacity = capacity_bytes
        self.used = 0
        self._blocks: collections.OrderedDict[int, Block] = collections.OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._blocks)

    @staticmethod
    def keys(tokens: list[int], n_blocks: int) -> list[int]:
        keys, parent = [], None
        for b in range(n_blocks):
            parent = hash((parent, tuple(tokens[b * BLOCK : (b + 1) * BLOCK])))
            keys.append(parent)
        return keys

    def first_key(self, tokens: list[int]) -> int | None:
        """The key of a prompt's first block, when it has one that could be cached (at least one token after it)."""
        return self.keys(tokens, 1)[0] if len(tokens) > BLOCK else None

    def has(self, key: int) -> bool:
        return key in self._blocks

    def lookup(self, tokens: list[int], need_logprobs: bool) -> list[Block]:
        """The cached blocks that start `tokens` — never all of it: the last token is always computed, since its
        logits choose the next token. With `need_logprobs`, only blocks that carry their tokens' log-probs."""
        keys = self.keys(tokens, (len(tokens) - 1) // BLOCK)
        found: list[Block] = []
        parent = None
        for key in keys:
            block = self._blocks.get(key)
            if block is None or block.parent != parent or block.tokens != tuple(tokens[len(found) * BLOCK :][:BLOCK]):
                break
            if need_logprobs and block.logprobs is None:
                break
            found.append(block)
            parent = key
        self._touch(keys[: len(found)])
        return found

    def insert(self, tokens: list[int], read_kv, logprobs: np.ndarray | None) -> int:
        """Cache the full blocks of `tokens` not cached yet; `read_kv(start, stop)` copies them out of a slot;
        `logprobs[i]` is the log-prob of token i (NaN for i = 0), or None. Returns the blocks added."""
        n_blocks = len(tokens) // BLOCK
        keys = self.keys(tokens, n_blocks)
        added = 0
        parent = None
        for b, key in enumerate(keys):
            block = self._blocks.get(key)
            lps = None if logprobs is None else np.asarray(logprobs[b * BLOCK : (b + 1) * BLOCK], np.float32)
            if block is None:
                kv = read_kv(b * BLOCK, (b + 1) * BLOCK)
                nbytes = sum(a.nbytes for a in kv) + (lps.nbytes if lps is not None else 0)
                if nbytes > self.capacity:
                    break
                self._blocks[key] = Block(tuple(tokens[b * BLOCK : (b + 1) * BLOCK]), parent, kv, lps, nbytes)
                self.used += nbytes
                added += 1
            elif block.logprobs is None and lps is not None:
                block.logprobs = lps
                block.nbytes += lps.nbytes
                self.used += lps.nbytes
            parent = key
        self._touch(keys)
        self._evict()
        return added

    def _touch(self, keys: list[int]) -> None:
        for key in reversed(keys):  # deepest first: the root ends up the most recent
            if key in self._blocks:
                self._blocks.move_to_end(key)

    def _evict(self) -> None:
        while self.used > self.capacity and self._blocks:
            _, block = self._blocks.popitem(last=False)
            self.used -= block.nbytes
            self.evicted += 1
