"""Answering with a template: generate (render → generate → cut at the stop → strip; a template with labels can only
generate one of its label words) or score (rank labels).

Scoring is the robust way to classify with small models: every answer word of every label is appended to the prompt
and scored in the engine's scoring mode (prompt log-probs, no generation); a label's score is its best word's summed
log-probability. All candidates go to the engine at once, so they share a batch.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from glotta.core.errors import invalid

from ..engine.constraints import Constraint
from ..engine.interface import Engine, GenerationRequest, SamplingParams, StopConditions
from ..engine.text_io import encode_text
from ..generation import collect, gather_all
from .library import Template


@dataclass
class TemplateAnswer:
    prompt: str
    answer: str
    label: str | None = None
    scores: dict[str, float] = field(default_factory=dict)  # label → best word's log-prob (score mode)
    word_scores: dict[str, float] = field(default_factory=dict)


async def score_continuation(engine: Engine, prompt: str, continuation: str, group: str = "",
                             prompt_ids: list[int] | None = None) -> float:
    """log P(continuation | prompt), summed over the continuation's tokens (`prompt_ids`: the prompt's, if known)."""
    if prompt_ids is None:
        prompt_ids = await encode_text(engine.tokenizer, prompt)
    prompt_len = len(prompt_ids)
    out = await collect(engine, GenerationRequest(prompt + continuation, 0, prompt_logprobs=True, stream=False,
                                                  group=group))
    if out.prompt_ids[:prompt_len] != prompt_ids:
        raise invalid(f"answer {continuation!r} merges with the end of the prompt into one token", "verbalizer")
    if len(out.prompt_ids) == prompt_len:
        raise invalid(f"answer {continuation!r} adds no token to the prompt", "verbalizer")
    # logprobs[i] belongs to token i + 1: the continuation's tokens are prompt_len .. end
    return float(sum((out.prompt_logprobs or [])[prompt_len - 1:]))


def _answer_word(word: str) -> str:
    return word if word[:1].isspace() else " " + word


async def run(engine: Engine, template: Template, inputs: dict[str, str], k: int = 0,
              example_ids: list[int] | None = None, mode: str | None = None, paraphrase: int = 0,
              max_tokens: int | None = None) -> TemplateAnswer:
    prompt = template.render(inputs, k, example_ids, paraphrase)
    mode = mode or template.mode
    if mode == "score":
        if not template.verbalizer:
            raise invalid(f"template {template.name} has no verbalizer: it can only generate", "mode")
        words = [(label, w) for label, ws in template.verbalizer.items() for w in ws]
        group = uuid.uuid4().hex  # the candidates share the batch as one request (and the prompt's cached prefix)
        ids = await encode_text(engine.tokenizer, prompt)
        scores = await gather_all(*(score_continuation(engine, prompt, _answer_word(w), group, ids) for _, w in words))
        word_scores = {w: s for (_, w), s in zip(words, scores)}
        by_label: dict[str, float] = {}
        for (label, _), s in zip(words, scores):
            by_label[label] = max(by_label.get(label, float("-inf")), s)
        best = max(by_label, key=by_label.get)
        best_word = max(template.verbalizer[best], key=lambda w: word_scores[w])
        return TemplateAnswer(prompt, best_word, best, by_label, word_scores)
    # a template with labels can only answer one of its label words: the words are a choice constraint, decoded with
    # the same token mask as structured outputs (engine/constraints.py), so the answer is never off-label
    words = [_answer_word(w) for ws in (template.verbalizer or {}).values() for w in ws]
    req = GenerationRequest(
        prompt,
        max_tokens or template.max_tokens,
        SamplingParams(top_k=1),
        StopConditions(stop_strings=tuple(template.stop)),
        stream=False,
        constraint=Constraint("choice", json.dumps(list(dict.fromkeys(words)), ensure_ascii=False), "verbalizer")
        if words else None,
    )
    out = await collect(engine, req)
    answer = out.text.strip()
    label = None
    if template.verbalizer:  # a generated answer that is one of the label words names its label
        label = next((lb for lb, ws in template.verbalizer.items() if answer.lower() in (w.lower() for w in ws)),
                     None)
    return TemplateAnswer(prompt, answer, label)
