"""OpenAI `/v1/completions` and `/v1/models` wire types (the subset the official client and eval tools use)."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ...bounds import MAX_PROMPTS, MAX_STOP_CHARS, MAX_STOP_STRINGS, MAX_TOP_LOGPROBS, SEED_MAX
from ..wire_types import check_wire


class StreamOptions(BaseModel):
    include_usage: bool = False

    @model_validator(mode="before")
    @classmethod
    def _wire(cls, data: Any) -> Any:
        return check_wire(cls, data)


class CompletionRequest(BaseModel):
    # unknown fields are accepted and ignored, as vLLM does; types are JSON's (wire_types): "5" is not an integer
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str | list[str] = Field(..., description="One prompt or a list (one choice each)")
    max_tokens: int | None = Field(16, ge=0, description="0 with echo + logprobs scores the prompt")
    temperature: float | None = Field(1.0, ge=0.0, le=100.0, description="0 = greedy")
    top_p: float | None = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(0, ge=0, le=1000, description="0 = off, 1 = greedy")
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=SEED_MAX, description="unsigned 64-bit")
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS,
                                 description="Log-probs of the n most likely tokens too")
    echo: bool = False
    n: int = Field(1, ge=1, le=1, description="Only 1 completion per prompt")
    best_of: int | None = Field(None, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    ignore_eos: bool = Field(False, description="vLLM extension: keep generating past end-of-document")

    @model_validator(mode="before")
    @classmethod
    def _wire(cls, data: Any) -> Any:
        return check_wire(cls, data)

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not 1 <= len(v) <= MAX_PROMPTS:
            raise ValueError(f"prompt list must hold 1 to {MAX_PROMPTS} prompts")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings")
        if any(len(s) > MAX_STOP_CHARS for s in ([v] if isinstance(v, str) else v or [])):
            raise ValueError(f"a stop string may hold at most {MAX_STOP_CHARS} characters")
        return v

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    @property
    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class Logprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] | None = None
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: Logprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "glotta"
    max_model_len: int | None = None
    engine: str | None = Field(None, description="Glotta: fp32 | int8 (embedded ONNX Runtime) | triton")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
