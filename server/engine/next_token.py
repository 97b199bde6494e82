"""From logits to what a client sees: the next token of a row and its chunk, and the log-probs of a prompt.

Kept apart from the engine's scheduling so that the rules a request sets (sampling, Megatron's newline-after-colon
rule, stop conditions, log-probs) live in one place.
"""

from __future__ import annotations

import numpy as np

from glotta.core.tokenizer import Tokenizer

from .interface import Chunk
from .rows import Row
from .sampling import log_softmax, top_logprobs


def top(tokenizer: Tokenizer, lp_row: np.ndarray, n: int) -> dict[str, float]:
    return {tokenizer.alternative_key(t): v for t, v in top_logprobs(lp_row, n)}


def score_prompt_chunk(tokenizer: Tokenizer, row: Row, start: int, logits: np.ndarray) -> None:
    """Log-probs of the prompt tokens that logits [f, V] of positions start..start+f−1 predict (tokens start+1..)."""
    targets = np.asarray(row.prompt_ids[start + 1 : start + 1 + len(logits)], np.int64)
    if not len(targets):
        return
    lp = log_softmax(logits[: len(targets)])
    row.prompt_logprobs = (row.prompt_logprobs or []) + lp[np.arange(len(targets)), targets].astype(float).tolist()
    if row.req.top_logprobs:
        row.prompt_top = (row.prompt_top or []) + [top(tokenizer, r, row.req.top_logprobs) for r in lp]


def next_token(tokenizer: Tokenizer, row: Row, logits: np.ndarray, greedy: int | None = None) -> Chunk:
    """Choose the row's next token (`greedy`: the batch's argmax for this row, when already computed)."""
    req = row.req
    raw = logits  # log-probs are the model's own, before the request's processors (vLLM's default too)
    last = row.generated[-1] if row.generated else row.prompt_ids[-1]
    if req.prevent_newline_after_colon and last in tokenizer.colon_ids:
        logits = logits.copy()
        logits[tokenizer.newline_ids] = -1e10
        greedy = None
    if row.processors is not None:
        logits = row.processors.apply(logits)
        greedy = None
    if greedy is None or not req.sampling.greedy:
        greedy = row.sampler.choose(logits)
    token = greedy
    row.generated.append(token)
    if row.processors is not None:
        row.processors.accept(token)
    chunk = Chunk(token_ids=[token])
    if req.logprobs or req.top_logprobs:
        lp = log_softmax(raw[None, :])[0]
        chunk.logprobs = [float(lp[token])]
        if req.top_logprobs:
            chunk.top_logprobs = [top(tokenizer, lp, req.top_logprobs)]
    if token in tokenizer.stop_ids and req.stop.stop_on_eod:
        chunk.text = row.stopper.feed(row.detok.flush()) + row.stopper.flush()
        chunk.finish_reason = "eod"
    else:
        chunk.text = row.stopper.feed(row.detok.add(token))
        if row.stopper.stopped:
            chunk.finish_reason = "stop"
        elif row.processors is not None and row.processors.grammar_finished:  # the answer is complete
            chunk.text += row.stopper.feed(row.detok.flush()) + row.stopper.flush()
            chunk.finish_reason = "stop"
        elif len(row.generated) >= req.max_new_tokens:
            chunk.text += row.stopper.feed(row.detok.flush()) + row.stopper.flush()
            chunk.finish_reason = "stop" if row.stopper.stopped else "length"
    if chunk.finish_reason is not None:
        row.done = True
    return chunk


def emit(out: list, row: Row, item: Chunk | BaseException) -> None:
    """Queue a chunk for delivery. A non-streaming request gets its first token (time to first token stays
    measurable) and then one chunk at the end: waking its consumer at every step costs the event loop (and the GIL the
    engine thread needs) more than the step's arithmetic at batch 16."""
    if isinstance(item, BaseException):
        row.pending = None
        out.append((row, item))
        return
    if row.pending is not None:
        item = row.pending.absorb(item)
        row.pending = None
    if row.req.stream or item.finish_reason is not None or len(row.generated) <= 1:
        out.append((row, item))
    else:
        row.pending = item
