"""Generation through the real gateway: response shape, scoring, batching identity, stops, seeds, models."""

import concurrent.futures as cf
import re

import pytest

PROMPTS = [
    "Il était une fois une tortue qui vivait dans ",
    "Debian",
    "Pour installer un paquet, utilisez la commande",
    "Le noyau Linux",
    "Les fichiers de configuration se trouvent dans le répertoire /etc, et chaque service y garde ses réglages",
    "Écran",
    "Si le système ne démarre pas, vérifiez",
    "La",
]


def greedy(http, prompts, n=24, **kw):
    r = http.put("/api", json={"prompts": prompts, "tokens_to_generate": n, "top_k": 1, **kw})
    assert r.status_code == 200, r.text
    return r.json()


def test_response_shape(http):
    out = greedy(http, ["Il était une fois une tortue qui vivait dans "], 20, logprobs=True)
    (text,), (segments,), (lps,) = out["text"], out["segments"], out["logprobs"]
    assert text.startswith("Il était une fois une tortue qui vivait dans ")
    assert "".join(segments) == text
    assert len(lps) == len(segments) - 1
    assert all(lp <= 0.0 for lp in lps)
    assert greedy(http, ["Bonjour"], 3)["logprobs"] is None


def test_scoring_mode_matches_generation_logprobs(http):
    prompt = "Pour installer un paquet, utilisez la commande"
    gen = greedy(http, [prompt], 10, logprobs=True)
    scored = http.put("/api", json={"prompts": [prompt], "tokens_to_generate": 0, "logprobs": True}).json()
    assert scored["text"] == [prompt]
    n = len(scored["segments"][0])
    assert scored["segments"][0] == gen["segments"][0][:n]
    assert len(scored["logprobs"][0]) == n - 1
    assert scored["logprobs"][0] == pytest.approx(gen["logprobs"][0][: n - 1], abs=1e-4)


def test_greedy_alone_equals_greedy_in_a_batch(http, gateway):
    alone = [greedy(http, [p])["segments"][0] for p in PROMPTS]
    before = _batched_steps(http)
    batched = greedy(http, PROMPTS)["segments"]
    assert batched == alone
    # and the same across 8 concurrent clients, which the engine batches together
    with cf.ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda p: greedy(http, [p])["segments"][0], PROMPTS))
    assert concurrent == alone
    assert _batched_steps(http) > before, "the engine never decoded more than one row at once"


def _batched_steps(http) -> float:
    """Decoding steps that ran with more than one row (from the batch-size histogram)."""
    text = http.get("/metrics").text
    total = one = 0.0
    for m in re.finditer(r'glotta_decode_batch_size_(count|bucket)\{(?:le="([^"]+)",)?model="glotta-fr-tiny"\} (\S+)',
                         text):
        if m.group(1) == "count":
            total = float(m.group(3))
        elif m.group(2) == "1.0":
            one = float(m.group(3))
    return total - one


def test_seed_reproducible_alone_and_in_a_batch(http):
    body = {"prompts": ["Le système"], "tokens_to_generate": 30, "temperature": 1.0, "random_seed": 7}
    a = http.put("/api", json=body).json()["text"][0]
    b = http.put("/api", json=body).json()["text"][0]
    assert a == b
    other = http.put("/api", json={**body, "random_seed": 8}).json()["text"][0]
    assert other != a
    with cf.ThreadPoolExecutor(4) as pool:
        futs = [pool.submit(http.put, "/api", json=body)] + [
            pool.submit(http.put, "/api", json={**body, "random_seed": s}) for s in (1, 2, 3)
        ]
        assert futs[0].result().json()["text"][0] == a


def test_stop_on_eol_and_double_eol(http):
    found = False
    for p in PROMPTS:
        free = greedy(http, [p], 60)["text"][0][len(p):]
        if "\n" not in free:
            continue
        found = True
        eol = greedy(http, [p], 60, stop_on_eol=True)["text"][0][len(p):]
        assert eol == free[: free.index("\n") + 1]
    assert found, "no prompt produced a newline; pick prompts that do"


def test_stop_on_double_eol_on_a_model_that_writes_blank_lines(tmp_path):
    """The shipped models never write a blank line: a test model that always says "\n" does, after its first."""
    import asyncio

    from glotta.server.engine.interface import GenerationRequest, SamplingParams, StopConditions
    from glotta.server.engine.onnx_engine import OnnxEngine
    from glotta.server.generation import collect

    from .conftest import build_test_model

    build_test_model(tmp_path / "nl", always="\n")
    engine = OnnxEngine(tmp_path / "nl", threads=1)

    async def run(**stop):
        await engine.start()
        try:
            req = GenerationRequest("Le texte", 20, SamplingParams(top_k=1), StopConditions(**stop))
            return await collect(engine, req)
        finally:
            await engine.stop()

    free = asyncio.run(run())
    assert free.text == "\n" * 20 and free.finish_reason == "length"
    double = asyncio.run(run(stop_on_double_eol=True))
    assert double.text == "\n\n" and double.finish_reason == "stop" and len(double.token_ids) == 2
    single = asyncio.run(run(stop_on_eol=True))
    assert single.text == "\n" and len(single.token_ids) == 1


def test_stop_strings_cut_before_the_stop(http):
    prompt = "Il était une fois une tortue qui vivait dans "
    free = http.post("/v1/completions", json={"prompt": prompt, "max_tokens": 30, "temperature": 0}).json()
    text = free["choices"][0]["text"]
    assert free["choices"][0]["finish_reason"] == "length"
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = http.post(
        "/v1/completions", json={"prompt": prompt, "max_tokens": 30, "temperature": 0, "stop": ["§§never", stop]}
    ).json()["choices"][0]
    assert cut["text"] == text[: text.index(stop)]
    assert cut["finish_reason"] == "stop"


def test_models_differ_and_default_is_french(http):
    fr = greedy(http, ["La"], 12)["text"][0]
    assert greedy(http, ["La"], 12, model="glotta-fr-tiny")["text"][0] == fr
    es = greedy(http, ["La"], 12, model="glotta-es-tiny")["text"][0]
    assert es != fr
    ids = {m["id"] for m in http.get("/v1/models").json()["data"]}
    assert ids == {"glotta-fr-tiny", "glotta-es-tiny"}


def test_health_and_metrics(http):
    assert http.get("/health/live").json() == {"status": "ok"}
    ready = http.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    greedy(http, ["Bonjour"], 4)
    text = http.get("/metrics").text
    for name in ("glotta_time_to_first_token_seconds_count", "glotta_inter_token_latency_seconds_count",
                 "glotta_e2e_request_latency_seconds_count", "glotta_generation_tokens_total",
                 "glotta_queue_depth", "glotta_running_requests"):
        assert name in text
    m = re.search(r'glotta_requests_total\{endpoint="/api",status="200"\} (\S+)', text)
    assert m and float(m.group(1)) >= 1
