"""The one engine protocol every backend implements (embedded ONNX Runtime; Triton in front of any of its models).

The gateway only ever sees these types: handlers build a `GenerationRequest`, iterate the engine's async stream of
`Chunk`s and shape the wire response. No handler branches on the kind of backend. Engines fail with `GlottaError`
(kind INVALID for a request they cannot serve, UNAVAILABLE when the backend is down).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AsyncIterator, Protocol, runtime_checkable

from glotta.core.errors import invalid

from ..bounds import MAX_CONSTRAINT_CHARS, MAX_LOGIT_BIAS, MAX_STOP_CHARS, MAX_STOP_STRINGS, MAX_TOP_LOGPROBS, SEED_MAX
from .constraints import Constraint

if TYPE_CHECKING:
    from glotta.core.tokenizer import Tokenizer
    from glotta.modeling.chat_template import ChatTemplate


@dataclass(frozen=True)
class SamplingParams:
    """Megatron's sampling semantics: top_k == 1 or temperature 0 is greedy; /api forbids top_k with top_p."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0
    top_p_decay: float = 0.0
    top_p_bound: float = 0.0
    seed: int | None = None
    presence_penalty: float = 0.0  # OpenAI: minus this for every token already generated
    frequency_penalty: float = 0.0  # OpenAI: minus this times how often a token was generated
    repetition_penalty: float = 1.0  # CTRL / transformers / vLLM: over prompt and output; 1 = off
    logit_bias: tuple[tuple[int, float], ...] = ()  # OpenAI: (token id, bias added to its logit)

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
    group: str = ""  # the client request this prompt belongs to: rows of one group share the batch fairly with others
    prompt_ids: tuple[int, ...] | None = None  # a prompt given as token ids (then `prompt` is unused): used as is
    constraint: Constraint | None = None  # structured output: the answer matches it (constraints.py)


@dataclass
class PromptInfo:
    token_ids: list[int]
    logprobs: list[float] | None = None  # len(token_ids) - 1: the first token has no prefix
    top_logprobs: list[dict[str, float]] | None = None
    cached_tokens: int = 0  # taken from the prefix cache instead of computed


@dataclass
class Chunk:
    """One step of a generation stream. The first chunk carries `prompt`; the last carries `finish_reason`."""

    text: str = ""  # new text since the previous chunk (stop strings already cut)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None
    top_logprobs: list[dict[str, float]] | None = None
    finish_reason: str | None = None  # "length" | "stop" | "eod"
    prompt: PromptInfo | None = None

    def absorb(self, later: "Chunk") -> "Chunk":
        """This chunk followed by `later`, as one, in place (for consumers that only want the end)."""
        self.text += later.text
        self.token_ids += later.token_ids
        if later.logprobs is not None:
            self.logprobs = (self.logprobs or []) + later.logprobs
        if later.top_logprobs is not None:
            self.top_logprobs = (self.top_logprobs or []) + later.top_logprobs
        self.finish_reason = later.finish_reason
        self.prompt = self.prompt or later.prompt
        return self


def check_request(req: GenerationRequest) -> None:
    """The limits every backend enforces alike — the embedded engine, the gateway's TritonEngine and the model inside
    Triton all call this, so a request straight to Triton is refused exactly as through the gateway."""
    s = req.sampling

    def bounded(name: str, value: float, lo: float, hi: float) -> None:
        if not (math.isfinite(value) and lo <= value <= hi):
            raise invalid(f"{name} must be a number from {lo:g} to {hi:g}, not {value!r}", name)

    if req.max_new_tokens < 0:
        raise invalid(f"max_new_tokens must be an integer greater than or equal to 0, not {req.max_new_tokens}",
                      "max_new_tokens")
    bounded("temperature", s.temperature, 0.0, 100.0)
    bounded("top_k", s.top_k, 0, 1000)
    bounded("top_p", s.top_p, 0.0, 1.0)
    bounded("top_p_decay", s.top_p_decay, 0.0, 1.0)
    bounded("top_p_bound", s.top_p_bound, 0.0, 1.0)
    bounded("presence_penalty", s.presence_penalty, -2.0, 2.0)
    bounded("frequency_penalty", s.frequency_penalty, -2.0, 2.0)
    if not (math.isfinite(s.repetition_penalty) and 0.0 < s.repetition_penalty <= 10.0):
        raise invalid(f"repetition_penalty must be above 0 and at most 10, not {s.repetition_penalty!r}",
                      "repetition_penalty")
    if len(s.logit_bias) > MAX_LOGIT_BIAS:
        raise invalid(f"logit_bias may hold at most {MAX_LOGIT_BIAS} tokens", "logit_bias")
    for token, bias in s.logit_bias:
        if not (math.isfinite(bias) and -100.0 <= bias <= 100.0):
            raise invalid(f"logit_bias values must be from -100 to 100, not {bias!r} (token {token})", "logit_bias")
    if s.seed is not None and not 0 <= s.seed <= SEED_MAX:
        raise invalid(f"seed must be an integer from 0 to 2**64 - 1, not {s.seed}", "seed")
    if len(req.stop.stop_strings) > MAX_STOP_STRINGS:
        raise invalid(f"at most {MAX_STOP_STRINGS} stop strings", "stop")
    if any(len(s) > MAX_STOP_CHARS for s in req.stop.stop_strings):
        raise invalid(f"a stop string may hold at most {MAX_STOP_CHARS} characters", "stop")
    if req.constraint is not None and len(req.constraint.value) > MAX_CONSTRAINT_CHARS:
        raise invalid(f"a structured-output constraint may hold at most {MAX_CONSTRAINT_CHARS} characters",
                      req.constraint.field)
    if not 0 <= req.top_logprobs <= MAX_TOP_LOGPROBS:
        raise invalid(f"top log-probs must be from 0 to {MAX_TOP_LOGPROBS}, not {req.top_logprobs}", "logprobs")


@runtime_checkable
class Engine(Protocol):
    name: str
    max_context: int
    tokenizer: "Tokenizer"  # the model's tokenizer, for what the gateway computes itself (segments, scoring)
    chat_template: "ChatTemplate | None"  # the folder's, or --chat-template's; None: /v1/chat/completions is a 400

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
