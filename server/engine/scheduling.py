"""Who joins the running batch, and how much prompt is computed per step: the engine's scheduling policy.

Policy (the defaults below, each configurable on `glotta serve` and in a Triton model's parameters):

- **Per-request share.** The prompts of one request (a 128-prompt `/api` call, `n` choices, a template's label
  candidates) may hold at most `max_rows_per_request` rows of the batch (default: half of `max_batch`). A giant
  request therefore never holds every row: a request that arrives later always finds rows free or freed soon.
- **Round-robin admission.** Waiting rows are grouped by request; each admission pass takes one row from each request
  in turn, starting after the request served last, so no request's backlog delays another's first row.
- **Chunked prefill.** At most `prefill_chunk` prompt tokens are computed between two decoding steps; a longer prompt
  is split over several steps, so the running rows keep decoding while it is read and never stall for a whole long
  prompt.
- **Prefix cache.** `prefix_cache_mb` of prompt KV blocks (prefix_cache.py); 0 turns it off.
- **Speculation.** With `speculate` K > 0, a greedy row decoding alone drafts up to K tokens from its own text and
  verifies them in one pass (speculation.py); the output is unchanged. Off by default, as in TGI and vLLM: it pays
  where text repeats, and costs a little where it does not.
"""

from __future__ import annotations

import collections
from dataclasses import asdict, dataclass, fields
from typing import Callable, Generic, Hashable, Protocol, TypeVar


@dataclass(frozen=True)
class SchedulerPolicy:
    max_batch: int = 64
    max_rows_per_request: int = 0  # 0: half of max_batch
    prefill_chunk: int = 256
    prefix_cache_mb: int = 64
    speculate: int = 0  # draft tokens per verifying pass (n-gram prompt lookup); 0: off

    @property
    def row_cap(self) -> int:
        return self.max_rows_per_request or max(1, self.max_batch // 2)

    def to_params(self) -> dict[str, str]:
        """As Triton model parameters (strings)."""
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_params(cls, params: dict[str, str]) -> "SchedulerPolicy":
        return cls(**{f.name: int(params[f.name]) for f in fields(cls) if params.get(f.name, "") != ""})


class Waiting(Protocol):
    group: Hashable
    cancelled: bool


W = TypeVar("W", bound=Waiting)


class FairQueue(Generic[W]):
    """Waiting rows, grouped by request, admitted round-robin across requests. Not thread-safe: one thread owns it
    (the engine's worker); its length may be read from anywhere."""

    def __init__(self) -> None:
        self._groups: collections.OrderedDict[Hashable, collections.deque[W]] = collections.OrderedDict()
        self._count = 0
        self.dropped = 0  # cancelled while waiting

    def __len__(self) -> int:
        return self._count

    def __iter__(self):
        for q in self._groups.values():
            yield from q

    def push(self, row: W) -> None:
        self._groups.setdefault(row.group, collections.deque()).append(row)
        self._count += 1

    def take(self, free: int, held: collections.Counter, cap: int, admit: Callable[[W], bool]) -> list[W]:
        """Up to `free` rows, one per request per pass; a request holding `cap` rows (`held` counts them) waits,
        and so does a row `admit` declines this time (it keeps its place)."""
        taken: list[W] = []
        progress = True
        while free > 0 and progress:
            progress = False
            for key in list(self._groups):
                if free == 0:
                    break
                q = self._groups[key]
                while q and q[0].cancelled:
                    q.popleft()
                    self.dropped += 1
                    self._count -= 1
                if not q:
                    del self._groups[key]
                    continue
                if held[key] >= cap or not admit(q[0]):
                    continue
                taken.append(q.popleft())
                self._count -= 1
                held[key] += 1
                free -= 1
                progress = True
                self._groups.move_to_end(key)  # the next pass starts with the requests not served yet
                if not q:
                    del self._groups[key]
        return taken
