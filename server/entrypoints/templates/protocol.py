"""Wire types of the prompt-template API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...bounds import MAX_TEMPLATE_EXAMPLES, MAX_TEMPLATE_INPUT_CHARS, MAX_TEMPLATE_TOKENS
from ..wire_types import check_wire


class TemplateSummary(BaseModel):
    name: str
    task: str
    language: str
    mode: Literal["score", "generate"]
    description: str
    inputs: list[str]
    labels: list[str]
    examples: int
    paraphrases: int


class TemplateList(BaseModel):
    object: Literal["list"] = "list"
    data: list[TemplateSummary]


class TemplateRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Annotated[str, Field(max_length=MAX_TEMPLATE_INPUT_CHARS)]] = Field(
        ..., max_length=64, description="a value for each of the template's inputs")
    k: int = Field(0, ge=0, le=MAX_TEMPLATE_EXAMPLES, description="number of examples shown before the query (k-shot)")
    examples: list[int] | None = Field(None, max_length=MAX_TEMPLATE_EXAMPLES,
                                       description="which examples to show, by index (overrides k)")
    mode: Literal["score", "generate"] | None = Field(None, description="default: the template's")
    paraphrase: int = Field(0, ge=0, description="0 = the template's pattern, i = its i-th paraphrase")
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_TEMPLATE_TOKENS)

    @model_validator(mode="before")
    @classmethod
    def _wire(cls, data: Any) -> Any:
        return check_wire(cls, data)


class TemplateRunResponse(BaseModel):
    template: str
    model: str
    mode: Literal["score", "generate"]
    prompt: str = Field(..., description="the rendered k-shot prompt the model saw")
    answer: str
    label: str | None = None
    scores: dict[str, float] | None = Field(None, description="label → log-prob of its best answer word")
