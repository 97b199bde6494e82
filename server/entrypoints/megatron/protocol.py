"""Wire types of Megatron-LM's `PUT /api`: field names, defaults, limits and error texts of its server.

Megatron validates in a fixed order and answers the first failure; `_validate_in_megatron_order` keeps that order and
those texts (so clients that compare messages keep working), but every failure is a 400, never Megatron's HTTP 200.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from glotta.core.errors import invalid

from ...bounds import MAX_PROMPTS, SEED_MAX
from ..wire_types import may_hold_surrogates, reject_lone_surrogates


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _validate_in_megatron_order(d: Any) -> None:  # noqa: C901 - one flat list of checks, in Megatron's order
    def fail(msg: str, param: str) -> None:
        raise invalid(msg, param)

    if not isinstance(d, dict):
        fail("request body must be a JSON object", "body")
    if "prompts" not in d:
        fail("prompts argument required", "prompts")
    if "max_len" in d:
        fail("max_len is no longer used.  Replace with tokens_to_generate", "max_len")
    if "sentences" in d:
        fail("sentences is no longer used.  Replace with prompts", "sentences")
    if "beam_width" in d:
        fail("Beam search is no longer supported.", "beam_width")
    prompts = d["prompts"]
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        fail("prompts is not a list of strings", "prompts")
    if len(prompts) == 0:
        fail("prompts is empty", "prompts")
    if len(prompts) > MAX_PROMPTS:
        fail(f"Maximum number of prompts is {MAX_PROMPTS}", "prompts")
    ttg = d.get("tokens_to_generate", 64)
    if not _is_int(ttg):
        fail("tokens_to_generate must be an integer greater than 0", "tokens_to_generate")
    if ttg < 0:
        fail("tokens_to_generate must be an integer greater than or equal to 0", "tokens_to_generate")
    logprobs = d.get("logprobs", False)
    if not isinstance(logprobs, bool):
        fail("logprobs must be a boolean value", "logprobs")
    if ttg == 0 and not logprobs:
        fail("tokens_to_generate=0 implies logprobs should be True", "logprobs")
    t = d.get("temperature", 1.0)
    if not _is_number(t) or not (0.0 < t <= 100.0):
        fail("temperature must be a positive number less than or equal to 100.0", "temperature")
    top_k = d.get("top_k", 0)
    if not _is_int(top_k):
        fail("top_k must be an integer equal to or greater than 0 and less than or equal to 1000", "top_k")
    if not (0 <= top_k <= 1000):
        fail("top_k must be equal to or greater than 0 and less than or equal to 1000", "top_k")
    top_p = d.get("top_p", 0.0)
    if not isinstance(top_p, float):
        fail("top_p must be a positive float less than or equal to 1.0", "top_p")
    if top_p > 0.0 and top_k > 0:
        fail("cannot set both top-k and top-p samplings.", "top_p")
    if not (0.0 <= top_p <= 1.0):
        fail("top_p must be less than or equal to 1.0", "top_p")
    decay = d.get("top_p_decay", 0.0)
    if not isinstance(decay, float):
        fail("top_p_decay must be a positive float less than or equal to 1.0", "top_p_decay")
    if decay > 0.0 and top_p == 0.0:
        fail("top_p_decay cannot be set without top_p", "top_p_decay")
    if not (0.0 <= decay <= 1.0):
        fail("top_p_decay must be less than or equal to 1.0", "top_p_decay")
    bound = d.get("top_p_bound", 0.0)
    if not isinstance(bound, float):
        fail("top_p_bound must be a positive float less than or equal to top_p", "top_p_bound")
    if bound > 0.0 and top_p == 0.0:
        fail("top_p_bound cannot be set without top_p", "top_p_bound")
    if not (0.0 <= bound <= top_p or bound == 0.0):
        fail("top_p_bound must be greater than 0 and less than top_p", "top_p_bound")
    add_bos = d.get("add_BOS", False)
    if not isinstance(add_bos, bool):
        fail("add_BOS must be a boolean value", "add_BOS")
    if any(len(p) == 0 for p in prompts) and not add_bos:
        fail("Empty prompts require add_BOS=true", "add_BOS")
    for flag in ("stop_on_double_eol", "stop_on_eol", "prevent_newline_after_colon", "no_log"):
        if not isinstance(d.get(flag, False), bool):
            fail(f"{flag} must be a boolean value", flag)
    seed = d.get("random_seed", -1)
    if not _is_int(seed):
        fail("random_seed must be integer", "random_seed")
    if seed < 0 and seed != -1:
        fail("random_seed must be a positive integer", "random_seed")
    if seed > SEED_MAX:  # not Megatron's (its torch seed is 64-bit too): seeds are unsigned 64-bit everywhere here
        fail("random_seed must be less than 2**64", "random_seed")
    if "model" in d and not isinstance(d["model"], str):
        fail("model must be a string", "model")
    if may_hold_surrogates.get():
        reject_lone_surrogates(d)


class MegatronRequest(BaseModel):
    """`PUT /api` body. Unknown keys are ignored, as Megatron does."""

    model_config = ConfigDict(extra="ignore")

    prompts: list[str] = Field(..., min_length=1, max_length=MAX_PROMPTS, description="Texts to continue")
    tokens_to_generate: int = Field(64, ge=0, description="New tokens per prompt; 0 = score the prompts")
    logprobs: bool = Field(False, description="Return the log-prob of every token after the first")
    temperature: float = Field(1.0, gt=0.0, le=100.0)
    top_k: int = Field(0, ge=0, le=1000, description="1 = greedy")
    top_p: float = Field(0.0, ge=0.0, le=1.0)
    top_p_decay: float = Field(0.0, ge=0.0, le=1.0)
    top_p_bound: float = Field(0.0, ge=0.0, le=1.0)
    add_BOS: bool = False
    stop_on_double_eol: bool = False
    stop_on_eol: bool = False
    prevent_newline_after_colon: bool = False
    random_seed: int = Field(-1, ge=-1, le=SEED_MAX, description="-1 = not reproducible")
    no_log: bool = False
    model: str | None = Field(None, description="Glotta extension: which served model (default: the server's)")

    @model_validator(mode="before")
    @classmethod
    def _megatron_checks(cls, data: Any) -> Any:
        _validate_in_megatron_order(data)
        return data


class MegatronResponse(BaseModel):
    text: list[str] = Field(..., description="prompt + generation, detokenized")
    segments: list[list[str]] = Field(..., description="text of each token of prompt + generation")
    logprobs: list[list[float]] | None = Field(None, description="per token after the first, when asked")
