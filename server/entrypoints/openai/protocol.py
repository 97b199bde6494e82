"""OpenAI `/v1/completions` and `/v1/models` wire types, and the sampling fields chat shares with completions."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ...bounds import (
    MAX_CHOICES,
    MAX_LOGIT_BIAS,
    MAX_PROMPTS,
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    MAX_TOP_LOGPROBS,
    SEED_MAX,
)
from ..wire_types import check_wire


class StreamOptions(BaseModel):
    include_usage: bool = False

    @model_validator(mode="before")
    @classmethod
    def _wire(cls, data: Any) -> Any:
        return check_wire(cls, data)


class JsonSchemaFormat(BaseModel):
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(populate_by_name=True)


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema(self) -> "ResponseFormat":
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.schema_ is None):
            raise ValueError("response_format of type json_schema needs json_schema.schema")
        return self


class SamplingFields(BaseModel):
    """The fields completions and chat share: sampling, penalties, stop, seed, n, structured outputs. Unknown fields
    are accepted and ignored, as vLLM does (a standard OpenAI field Glotta does not implement is refused by name);
    types are JSON's (wire_types): "5" is not an integer."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    temperature: float | None = Field(1.0, ge=0.0, le=100.0, description="0 = greedy")
    top_p: float | None = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(0, ge=0, le=1000, description="vLLM extension: 0 = off, 1 = greedy")
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=SEED_MAX, description="unsigned 64-bit")
    presence_penalty: float | None = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(0.0, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(1.0, gt=0.0, le=10.0,
                                             description="vLLM extension: CTRL's penalty over prompt and output")
    logit_bias: dict[str, float] | None = Field(None, description="token id (as a string) → bias from -100 to 100")
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="completions per prompt")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="accepted, not used")
    ignore_eos: bool = Field(False, description="vLLM extension: keep generating past end-of-document")
    response_format: ResponseFormat | None = None
    guided_json: dict[str, Any] | str | None = Field(None, description="vLLM extension: a JSON schema to follow")
    guided_regex: str | None = Field(None, description="vLLM extension: a regex the answer matches")
    guided_choice: list[str] | None = Field(None, description="vLLM extension: the answer is one of these")
    guided_grammar: str | None = Field(None, description="vLLM extension: a Lark grammar the answer follows")

    @model_validator(mode="before")
    @classmethod
    def _wire(cls, data: Any) -> Any:
        return check_wire(cls, data)

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings")
        if any(len(s) > MAX_STOP_CHARS for s in ([v] if isinstance(v, str) else v or [])):
            raise ValueError(f"a stop string may hold at most {MAX_STOP_CHARS} characters")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return v
        if len(v) > MAX_LOGIT_BIAS:
            raise ValueError(f"at most {MAX_LOGIT_BIAS} tokens")
        for k, b in v.items():
            if not k.isdigit():
                raise ValueError(f"keys are token ids, not {k!r}")
            if not -100 <= b <= 100:
                raise ValueError(f"biases are from -100 to 100, not {b}")
        return v

    @property
    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        ..., description="One prompt or a list (n choices each); text, or token ids")
    max_tokens: int | None = Field(16, ge=0, description="0 with echo + logprobs scores the prompt")
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS,
                                 description="Log-probs of the n most likely tokens too")
    echo: bool = False
    best_of: int | None = Field(None, ge=1, le=MAX_CHOICES,
                                description="generated per prompt; the n of highest log-probability are returned")
    suffix: str | None = Field(None, description="not supported: a request that sets it is refused")

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompts(cls, v):
        if isinstance(v, list) and not 1 <= len(v) <= MAX_PROMPTS:
            raise ValueError(f"prompt list must hold 1 to {MAX_PROMPTS} prompts")
        if isinstance(v, list) and v and not isinstance(v[0], str):  # token ids: JSON integers, nothing else
            ids = [i for p in v for i in (p if isinstance(p, list) else [p])]
            if any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
                raise ValueError("token ids must be integers")
        return v

    @property
    def prompts(self) -> list[str | list[int]]:
        """Each prompt: its text, or its token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and isinstance(p[0], int):
            return [list(p)]
        return list(p)


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
    chat: bool = Field(False, description="Glotta: the model has a chat template (/v1/chat/completions)")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
