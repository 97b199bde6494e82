"""The OpenAI fields completions and chat share, turned into the engine's request: sampling, penalties, logit bias,
stop, seed per choice, and the one structured-output constraint (`response_format`, or vLLM's `guided_*`)."""

from __future__ import annotations

import json

from glotta.core.errors import invalid

from ...bounds import SEED_MAX
from ...engine.constraints import Constraint
from ...engine.interface import GenerationRequest, SamplingParams, StopConditions
from .protocol import SamplingFields


def constraint_of(req: SamplingFields) -> Constraint | None:
    """The request's structured-output constraint; asking for two at once is a 400 naming the second."""
    found: list[Constraint] = []
    rf = req.response_format
    if rf is not None and rf.type == "json_object":
        found.append(Constraint("json_object", "", "response_format"))
    elif rf is not None and rf.type == "json_schema":
        found.append(Constraint("json_schema", json.dumps(rf.json_schema.schema_), "response_format"))
    if req.guided_json is not None:
        schema = req.guided_json if isinstance(req.guided_json, str) else json.dumps(req.guided_json)
        found.append(Constraint("json_schema", schema, "guided_json"))
    if req.guided_regex is not None:
        found.append(Constraint("regex", req.guided_regex, "guided_regex"))
    if req.guided_choice is not None:
        found.append(Constraint("choice", json.dumps(req.guided_choice, ensure_ascii=False), "guided_choice"))
    if req.guided_grammar is not None:
        found.append(Constraint("lark", req.guided_grammar, "guided_grammar"))
    if len(found) > 1:
        raise invalid(f"{found[1].field}: only one structured-output constraint per request ({found[0].field} is "
                      f"already set)", found[1].field)
    return found[0] if found else None


def sampling_params(req: SamplingFields, choice: int) -> SamplingParams:
    """`choice`: the row's number within the request; a seeded request gives each row its own seed (seed + choice),
    so n choices differ and each is reproducible."""
    return SamplingParams(
        temperature=1.0 if req.temperature is None else req.temperature,
        top_k=req.top_k or 0,
        top_p=0.0 if req.top_p in (None, 1.0) else req.top_p,  # OpenAI's 1.0 means "no nucleus"
        seed=None if req.seed is None else (req.seed + choice) % (SEED_MAX + 1),
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
        logit_bias=tuple((int(k), float(v)) for k, v in (req.logit_bias or {}).items()),
    )


def engine_request(req: SamplingFields, prompt: str | list[int], choice: int, *, max_tokens: int, logprobs: bool,
                   top_logprobs: int, prompt_logprobs: bool, group: str, constraint: Constraint | None,
                   stream: bool) -> GenerationRequest:
    text, ids = (prompt, None) if isinstance(prompt, str) else ("", tuple(prompt))
    return GenerationRequest(
        prompt=text,
        prompt_ids=ids,
        max_new_tokens=max_tokens,
        sampling=sampling_params(req, choice),
        stop=StopConditions(stop_on_eod=not req.ignore_eos, stop_strings=req.stop_strings),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        prompt_logprobs=prompt_logprobs,
        stream=stream,
        group=group,
        constraint=constraint,
    )
