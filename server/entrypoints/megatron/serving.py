"""`PUT /api` logic: one engine request per prompt, all submitted at once so they share the running batch."""

from __future__ import annotations

import uuid

from ...bounds import SEED_MAX
from ...engine.interface import Engine, GenerationRequest, SamplingParams, StopConditions
from ...generation import collect, gather_all
from .protocol import MegatronRequest, MegatronResponse


def to_engine_request(req: MegatronRequest, prompt: str, index: int, group: str = "") -> GenerationRequest:
    # reproducible per prompt, batch or not; wraps within the unsigned 64-bit range
    seed = None if req.random_seed == -1 else (req.random_seed + index) % (SEED_MAX + 1)
    return GenerationRequest(
        prompt=prompt,
        max_new_tokens=req.tokens_to_generate,
        sampling=SamplingParams(
            temperature=req.temperature,
            top_k=req.top_k,
            top_p=req.top_p,
            top_p_decay=req.top_p_decay,
            top_p_bound=req.top_p_bound,
            seed=seed,
        ),
        stop=StopConditions(stop_on_eol=req.stop_on_eol, stop_on_double_eol=req.stop_on_double_eol),
        logprobs=req.logprobs,
        prompt_logprobs=req.logprobs,
        add_bos=req.add_BOS,
        prevent_newline_after_colon=req.prevent_newline_after_colon,
        stream=False,
        group=group,
    )


async def generate(engine: Engine, req: MegatronRequest) -> MegatronResponse:
    group = uuid.uuid4().hex  # the prompts of this call share the batch fairly with other calls
    with engine.admit(len(req.prompts)):
        results = await gather_all(
            *(collect(engine, to_engine_request(req, p, i, group)) for i, p in enumerate(req.prompts))
        )
    texts, segments, logprobs = [], [], []
    for prompt, r in zip(req.prompts, results):
        ids = r.prompt_ids + r.token_ids
        # the prompt as sent, then the generated text: special tokens only where asked for (add_BOS's token), never
        # the tokenizer's own <s> or a generated end token (Megatron decodes the whole sequence, EOD included)
        bos = engine.detokenize(r.prompt_ids[:1]) if req.add_BOS else ""
        texts.append(bos + prompt + r.text)
        segments.append(engine.token_strings(ids))
        if req.logprobs:
            logprobs.append((r.prompt_logprobs or []) + r.logprobs)
    return MegatronResponse(text=texts, segments=segments, logprobs=logprobs if req.logprobs else None)
