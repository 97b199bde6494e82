"""The one engine protocol every backend implements (embedded ONNX Runtime; Triton in front of any of its models).

The gateway only ever sees these types: handlers build a `GenerationRequest`, iterate the engine's async stream of
`Chunk`s and shape the wire response. No handler branches on the kind of backend. Engines fail with `GlottaError` (kind INVALID
for a request they cannot serve, UNAVAILABLE when the backend is down).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AsyncIterator, Protocol, runtime_checkable

if TYPE_CHECKING:
    from glotta.core.tokenizer import Tokenizer


@dataclass(frozen=True)
class SamplingParams:
    """Megatron's sampling semantics: top_k == 1 or temperature 0 is greedy; /api forbids top_k with top_p."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0
    top_p_decay: float = 0.0
    top_p_bound: float = 0.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        # below 1e-5, dividing the logits by the temperature overflows: that is greedy in the limit anyway
        return self.top_k == 1 or self.temperature < 1e-5


@dataclass(frozen=True)
class StopConditions:
    stop_on_eod: bool = True
    stop_on_eol: bool = False
    stop_on_double_eol: bool = False
    stop_strings: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    max_new_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: StopConditions = field(default_factory=StopConditions)
    logprobs: bool = False  # log-prob of each generated token
    top_logprobs: int = 0  # also the n most likely alternatives at each generated position
    prompt_logprobs: bool = False  # log-prob of each prompt token given its prefix (scoring)
    add_bos: bool = False
    prevent_newline_after_colon: bool = False
    stream: bool = True  # False: the caller only wants the end, so a remote backend may answer in one message


@dataclass
class PromptInfo:
    token_ids: list[int]
    logprobs: list[float] | None = None  # len(token_ids) - 1: the first token has no prefix
    top_logprobs: list[dict[str, float]] | None = None


@dataclass
class Chunk:
    """One step of a generation stream. The first chunk carries `prompt`; the last carries `finish_reason`."""

    text: str = ""  # new text since the previous chunk (stop strings already cut)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None
    top_logprobs: list[dict[str, float]] | None = None
    finish_reason: str | None = None  # "length" | "stop" | "eod"
    prompt: PromptInfo | None = None


@runtime_checkable
class Engine(Protocol):
    name: str
    max_context: int
    tokenizer: "Tokenizer"  # the model's tokenizer, for what the gateway computes itself (segments, scoring)

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def ready(self) -> bool: ...

    def stats(self) -> dict[str, int]:
        """Live counters for metrics: at least `waiting` and `running`."""
        ...

    def token_strings(self, token_ids: list[int]) -> list[str]:
        """Text of each token on its own (Megatron's `segments`)."""
        ...

    def detokenize(self, token_ids: list[int]) -> str: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Stream the generation; raises GlottaError before the first chunk for requests it cannot serve."""
        ...
