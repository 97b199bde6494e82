"""Fair admission, chunked prefill and the prefix cache, on the real engine (the shipped French model)."""

import asyncio
import collections

import numpy as np
import pytest

from glotta.server.engine.interface import GenerationRequest, SamplingParams, StopConditions
from glotta.server.engine.onnx_engine import OnnxEngine
from glotta.server.engine.prefix_cache import BLOCK, PrefixCache
from glotta.server.engine.scheduling import FairQueue, SchedulerPolicy
from glotta.server.templates import runner
from glotta.server.templates.library import load_library

from .conftest import FR, REPO

SHIPPED = REPO / FR
TEXT = ("Debian est une distribution Linux libre, composée de logiciels libres. Le projet a été fondé en 1993 par "
        "Ian Murdock. La gestion des paquets se fait avec apt, qui installe les dépendances. ")


def _req(prompt: str, n: int, **kw) -> GenerationRequest:
    return GenerationRequest(prompt, n, SamplingParams(top_k=1), StopConditions(stop_on_eod=False), **kw)


async def _collect(engine, req):
    """(token ids, prompt info, engine step of the first token, engine step at the end)."""
    ids, prompt, first = [], None, None
    async for c in engine.generate(req):
        if c.prompt is not None:
            prompt = c.prompt
        if c.token_ids and first is None:
            first = engine.steps
        ids += c.token_ids
    return ids, prompt, first, engine.steps


class _Row:
    def __init__(self, group, name):
        self.group, self.name, self.cancelled = group, name, False


def test_fair_queue_round_robin_with_a_per_request_cap():
    q = FairQueue()
    for i in range(6):
        q.push(_Row("giant", f"g{i}"))
    q.push(_Row("a", "a0"))
    q.push(_Row("b", "b0"))
    q.push(_Row("b", "b1"))
    q._groups["giant"][1].cancelled = True
    taken = q.take(5, collections.Counter(), cap=2, admit=lambda r: True)
    # one row per request per pass, then again; the giant stops at its cap; the cancelled row is dropped
    assert [r.name for r in taken] == ["g0", "a0", "b0", "g2", "b1"]
    assert q.dropped == 1 and len(q) == 3
    held = collections.Counter({"giant": 2})
    assert q.take(5, held, cap=2, admit=lambda r: True) == []  # still at its cap
    q.push(_Row("c", "c0"))
    # a row the caller declines keeps its place and holds back only its own request
    assert [r.name for r in q.take(5, collections.Counter(), cap=9, admit=lambda r: r.name != "g3")] == ["c0"]
    assert [r.name for r in q.take(5, collections.Counter(), cap=9, admit=lambda r: True)] == ["g3", "g4", "g5"]


def test_short_requests_start_within_steps_while_a_giant_request_runs():
    """A request of 24 prompts × 60 tokens (one group) fills an 8-row batch; it may hold only 4 rows, so short
    requests sent while it runs are prefilled at the next step boundary (counted in the engine's own steps, not in
    wall time), and they finish long before the giant does."""
    engine = OnnxEngine(SHIPPED, threads=1, policy=SchedulerPolicy(max_batch=8))
    prefilled = {}  # prompt token ids → the engine step at which the model read them
    prefill = engine.model.prefill

    def spy(prompts, first, **kw):
        for p in prompts:
            prefilled.setdefault(tuple(p), engine.steps)
        return prefill(prompts, first, **kw)

    engine.model.prefill = spy

    async def go():
        await engine.start()
        giant = [asyncio.ensure_future(_collect(engine, _req(f"Le paquet {i}", 60, group="giant")))
                 for i in range(24)]
        while engine.steps < 5:
            await asyncio.sleep(0.005)
        shorts = []
        for i in range(5):
            prompt = f"La version {i}"
            start = engine.steps
            *_, end = await _collect(engine, _req(prompt, 5))
            shorts.append((start, prefilled[tuple(engine.tokenizer.encode(prompt))], end))
        results = await asyncio.gather(*giant)
        await engine.stop()
        return shorts, max(end for *_, end in results)

    shorts, giant_end = asyncio.run(go())
    for start, read_at, end in shorts:
        assert read_at - start <= 2, shorts  # the next step boundary (the engine may finish a step meanwhile)
        assert end < giant_end
    # 4 rows at a time (its cap): 6 waves of 59 decoding steps; with all 8 rows it would have taken half as many
    assert giant_end >= 24 * 59 / 4


def test_chunked_prefill_keeps_decoding_and_changes_nothing():
    """A 300-token prompt read 32 tokens per step: the model sees one chunk per step with a decoding step for the
    running row between any two, and the long prompt's greedy continuation and prompt log-probs equal those of an
    unchunked read."""
    long_prompt = TEXT * 8

    async def go(policy):
        engine = OnnxEngine(SHIPPED, threads=1, policy=policy)
        calls = []  # what the model was asked to run, in order
        prefill, decode = engine.model.prefill, engine.model.decode
        engine.model.prefill = lambda prompts, first, starts=None, **kw: (
            calls.append(("prefill", [len(p) - s for p, s in zip(prompts, starts or [0] * len(prompts))])),
            prefill(prompts, first, starts=starts, **kw))[1]
        engine.model.decode = lambda tokens, lengths: (calls.append(("decode", len(tokens))), decode(tokens, lengths))[1]
        await engine.start()
        runner_task = asyncio.ensure_future(_collect(engine, _req("Le noyau", 80)))
        while engine.steps < 3:
            await asyncio.sleep(0.002)
        ids, prompt, *_ = await _collect(engine, _req(long_prompt, 10, prompt_logprobs=True))
        await runner_task
        await engine.stop()
        return ids, prompt, calls

    chunked = asyncio.run(go(SchedulerPolicy(prefill_chunk=32, prefix_cache_mb=0)))
    whole = asyncio.run(go(SchedulerPolicy(prefill_chunk=4096, prefix_cache_mb=0)))
    n_prompt = len(chunked[1].token_ids)
    assert n_prompt > 250
    long_calls = [i for i, (kind, _) in enumerate(chunked[2]) if kind == "prefill"][1:]  # after "Le noyau"
    assert [chunked[2][i][1] for i in long_calls] == [[32]] * (n_prompt // 32) + [[n_prompt % 32]] * (n_prompt % 32 > 0)
    for a, b in zip(long_calls, long_calls[1:]):  # the running row decoded between any two chunks
        assert ("decode", 1) in chunked[2][a:b]
    assert [sizes for kind, sizes in whole[2] if kind == "prefill"][1:] == [[n_prompt]]
    assert chunked[0] == whole[0]
    np.testing.assert_allclose(chunked[1].logprobs, whole[1].logprobs, atol=1e-5)


def test_prefix_cache_reuses_blocks_with_identical_results():
    prompts = [TEXT * 2 + " Le noyau", TEXT * 2 + " La version stable", TEXT * 2 + " Le noyau"]

    async def go(mb):
        engine = OnnxEngine(SHIPPED, threads=1, policy=SchedulerPolicy(prefix_cache_mb=mb))
        await engine.start()
        out = [await _collect(engine, _req(p, 12, prompt_logprobs=True)) for p in prompts]
        stats = engine.stats()
        await engine.stop()
        return out, stats

    cached, stats = asyncio.run(go(64))
    plain, _ = asyncio.run(go(0))
    assert [p.cached_tokens for _, p, *_ in plain] == [0, 0, 0]
    n = len(cached[0][1].token_ids)
    assert cached[0][1].cached_tokens == 0
    assert cached[1][1].cached_tokens >= (n - BLOCK) // BLOCK * BLOCK - BLOCK  # all shared full blocks
    assert cached[2][1].cached_tokens == (n - 1) // BLOCK * BLOCK  # the same prompt: all but its last block
    assert stats["prefix_cache_blocks"] > 0
    for (ids_c, p_c, *_), (ids_p, p_p, *_) in zip(cached, plain):
        assert ids_c == ids_p
        assert len(p_c.logprobs) == len(p_p.logprobs) == len(p_p.token_ids) - 1
        np.testing.assert_allclose(p_c.logprobs, p_p.logprobs, atol=1e-5)


def test_prefix_cache_is_bounded_and_evicts_leaves_first():
    kv = [np.zeros((2, BLOCK, 4), np.float32)]  # 512 bytes per block
    cache = PrefixCache(capacity_bytes=512 * 5)
    read = lambda a, b: [x.copy() for x in kv]  # noqa: E731
    base = list(range(BLOCK * 3))
    cache.insert(base + [1], read, None)
    for i in range(4):  # four other prompts sharing the first block of `base`
        cache.insert(base[:BLOCK] + [100 + i] * (BLOCK * 2) + [1], read, None)
        cache.lookup(base + [1], need_logprobs=False)  # `base` stays in use
    assert cache.used <= cache.capacity and cache.evicted > 0
    # the prompt in use is still whole; the first block shared by all survived every eviction
    assert len(cache.lookup(base + [1], need_logprobs=False)) == 3
    assert cache.lookup(base[:BLOCK] + [7] * BLOCK, need_logprobs=False)[:1]
    with pytest.raises(AssertionError):
        assert cache.lookup(base + [1], need_logprobs=True)  # inserted without log-probs: not for scoring


def test_score_mode_computes_the_few_shot_prompt_once():
    """A k = 4 sentiment template in score mode: the label candidates share one prompt; a second input shares the
    demonstrations. Answers and scores equal the uncached engine's; most prompt tokens come from the cache."""
    template = load_library()["sentiment-fr"]
    inputs = ["Ce logiciel est excellent, je le recommande.", "Le pilote plante sans cesse, quelle déception."]

    async def go(mb):
        engine = OnnxEngine(SHIPPED, threads=1, policy=SchedulerPolicy(prefix_cache_mb=mb))
        await engine.start()
        seen = []
        original = engine.generate

        async def spy(req):
            async for c in original(req):
                if c.prompt is not None:
                    seen.append((len(c.prompt.token_ids), c.prompt.cached_tokens))
                yield c

        engine.generate = spy
        answers = [await runner.run(engine, template, {"text": t}, k=4, mode="score") for t in inputs]
        await engine.stop()
        return answers, seen

    cached, seen = asyncio.run(go(64))
    plain, _ = asyncio.run(go(0))
    for a, b in zip(cached, plain):
        assert a.label == b.label and a.answer == b.answer
        assert a.scores == pytest.approx(b.scores, abs=1e-4)
    total, hit = map(sum, zip(*seen))
    assert hit / total >= 0.6, seen


def test_ngram_drafter_proposes_what_followed_the_latest_occurrence():
    from glotta.server.engine.speculation import NgramDrafter

    d = NgramDrafter()
    assert d.propose([1, 2, 3, 9, 1, 2], 3) == [3, 9, 1]  # "1 2" was followed by 3 9 1
    assert d.propose([5], 3) == []  # nothing ever followed 5
    assert d.propose([1, 2, 3, 7], 2) == []  # no n-gram ending in 7 was seen before
    assert d.propose([1, 2, 3], 4) == [7, 1, 2, 3]  # "1 2 3" twice before: the latest was followed by 7


def test_speculation_gives_the_same_tokens_in_fewer_passes():
    """Greedy with n-gram speculation equals plain greedy — tokens, their log-probs, stop strings, length — and a
    repetitive text takes fewer model passes; a sampled request is never speculated."""
    prompts = ["La commande de l'installation", TEXT, "Le noyau Linux"]

    async def go(k, req):
        engine = OnnxEngine(SHIPPED, threads=1, policy=SchedulerPolicy(speculate=k, prefix_cache_mb=0))
        await engine.start()
        try:
            ids, text, lps, finish = [], "", [], None
            async for c in engine.generate(req):
                ids += c.token_ids
                text += c.text
                lps += c.logprobs or []
                finish = c.finish_reason or finish
            return (ids, text, lps, finish), engine.steps
        finally:
            await engine.stop()

    fewer = 0
    for p in prompts:
        for kw in (dict(logprobs=True), dict(stream=True)):
            plain, plain_steps = asyncio.run(go(0, _req(p, 60, **kw)))
            spec, spec_steps = asyncio.run(go(4, _req(p, 60, **kw)))
            assert spec[:2] == plain[:2] and spec[3] == plain[3] == "length"
            np.testing.assert_allclose(spec[2], plain[2], atol=1e-4)
            assert spec_steps <= plain_steps
            fewer += spec_steps < plain_steps
    assert fewer >= 2  # the shipped model repeats itself: whole draft runs are accepted
    (_, text, _, _), _ = asyncio.run(go(0, _req(prompts[0], 60)))
    stop = StopConditions(stop_on_eod=False, stop_strings=(text.split()[len(text.split()) // 2],))
    plain, _ = asyncio.run(go(0, GenerationRequest(prompts[0], 60, SamplingParams(top_k=1), stop)))
    spec, _ = asyncio.run(go(4, GenerationRequest(prompts[0], 60, SamplingParams(top_k=1), stop)))
    assert spec == plain and plain[3] == "stop" and len(plain[0]) < 60
    sampled = GenerationRequest(prompts[0], 30, SamplingParams(temperature=0.8, seed=3), StopConditions())
    assert asyncio.run(go(4, sampled)) == asyncio.run(go(0, sampled))
