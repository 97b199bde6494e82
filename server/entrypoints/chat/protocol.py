"""OpenAI `/v1/chat/completions` wire types: the request (sampling fields shared with completions), the response and
its stream chunks."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...bounds import MAX_CHAT_MESSAGES, MAX_TOP_LOGPROBS
from ..openai.protocol import SamplingFields, Usage


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # a template may read more keys (name, tool_call_id, ...)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def for_template(self) -> dict[str, Any]:
        """The message as a chat template reads it: text parts joined into one string (as vLLM does for templates
        that expect a string); a part that is not text is refused."""
        out = self.model_dump(exclude_none=True)
        if isinstance(self.content, list):
            for part in self.content:
                if part.type != "text" or part.text is None:
                    raise ValueError(f"content part of type {part.type!r}: this model takes text only")
            out["content"] = "\n".join(p.text for p in self.content)
        return out


# Standard OpenAI chat fields Glotta does not implement: a request that sets one (to anything but its neutral value)
# is refused with a 400 naming it, never silently ignored
UNSUPPORTED = {"tools": "tools and function calling are not supported", "functions": "function calling is not "
               "supported", "function_call": "function calling is not supported", "audio": "audio output is not "
               "supported", "prediction": "predicted outputs are not supported", "web_search_options": "web search "
               "is not supported", "store": "stored completions are not supported", "reasoning_effort": "this model "
               "does not reason in a separate phase", "echo": "echo is not a chat completions field (OpenAI refuses "
               "it too): use /v1/completions with echo"}


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=MAX_CHAT_MESSAGES)
    max_tokens: int | None = Field(None, ge=0, description="deprecated by OpenAI: max_completion_tokens")
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    modalities: list[Literal["text"]] | None = None
    tool_choice: Literal["none", "auto"] | None = Field(None, description="no tools: none or auto only")
    parallel_tool_calls: bool | None = Field(None, description="accepted, not used (no tools)")
    metadata: dict[str, Any] | None = Field(None, description="accepted, not used")
    service_tier: str | None = Field(None, description="accepted, not used")
    add_generation_prompt: bool = Field(True, description="vLLM extension: end the prompt with the assistant's turn")
    chat_template_kwargs: dict[str, Any] | None = Field(None, description="vLLM extension: more template variables")
    # not implemented: refused when set (UNSUPPORTED, with the reason); the schema says only their neutral value
    tools: list[Any] | None = Field(None, json_schema_extra={"maxItems": 0})
    functions: list[Any] | None = Field(None, json_schema_extra={"maxItems": 0})
    function_call: Any = Field(None, json_schema_extra={"type": "null"})
    audio: Any = Field(None, json_schema_extra={"type": "null"})
    prediction: Any = Field(None, json_schema_extra={"type": "null"})
    web_search_options: Any = Field(None, json_schema_extra={"type": "null"})
    store: bool | None = Field(None, json_schema_extra={"enum": [False, None]})
    reasoning_effort: str | None = Field(None, json_schema_extra={"type": "null"})
    echo: bool | None = Field(None, json_schema_extra={"enum": [False, None]})

    def refused_field(self) -> tuple[str, str] | None:
        """(field, reason) of the first unsupported field set to something."""
        for name, reason in UNSUPPORTED.items():
            value = getattr(self, name)
            if value not in (None, False, [], {}):
                return name, reason
        return None

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None
