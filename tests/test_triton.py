"""A real tritonserver on CPU: the repository's configs, the CPU models, the gateway in front, outages."""

import json
import os
import queue
import re
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from glotta.server.grpc_api import load_stubs
from glotta.server.triton.config_writers.cpu import MODEL_PY, render_cpu_config
from glotta.server.triton.launcher import TritonServer

from .conftest import ES, FR, REPO, Gateway, free_port, free_port_block
from .conftest import wait_for as _wait_for

PROMPTS = ["Il était une fois une tortue qui vivait dans ", "Pour installer un paquet, utilisez la commande", "Le"]


@pytest.mark.parametrize("path", sorted(REPO.rglob("config.pbtxt")), ids=lambda p: str(p.relative_to(REPO)))
def test_every_config_parses_with_tritons_protobuf(path: Path):
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    assert config.name == path.parent.name
    assert config.backend or config.platform == "ensemble"


def test_a_typo_fails_the_parse():
    text = (REPO / FR / "config.pbtxt").read_text().replace("data_type: TYPE_INT32", "data_type: TYPE_INT23", 1)
    with pytest.raises(text_format.ParseError):
        text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.mark.parametrize("name", [FR, ES])
def test_cpu_model_folders_are_what_the_generator_renders(name):
    assert (REPO / name / "config.pbtxt").read_text() == render_cpu_config(name)
    assert (REPO / name / "1" / "model.py").read_text() == MODEL_PY


def test_triton_http_generate_and_metadata(triton):
    client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
    assert client.is_server_ready() and client.is_model_ready(FR) and client.is_model_ready(ES)
    names = {i["name"] for i in client.get_model_metadata(FR)["inputs"]}
    assert {"text_input", "max_tokens", "temperature", "top_k", "top_p", "seed", "stop_words", "stream",
            "return_log_probs"} <= names
    body = {"text_input": "Le noyau", "max_tokens": 8, "top_k": 1, "return_log_probs": True}
    out = httpx.post(f"{triton.http_url}/v2/models/{FR}/generate", json=body, timeout=60).json()
    assert out["text_output"].startswith("Le noyau") and out["finish_reason"] in ("length", "eod")
    assert len(out["output_log_probs"]) == len(out["output_ids"])
    r = httpx.post(f"{triton.http_url}/v2/models/{FR}/generate", json={"text_input": "x", "max_tokens": 10**6})
    assert r.status_code == 400 and "longer than allowed" in r.json()["error"]


def test_triton_grpc_streaming(triton):
    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    inputs = []
    for name, value, dtype in [("text_input", [b"Le noyau"], "BYTES"), ("max_tokens", [6], "INT32"),
                               ("top_k", [1], "INT32"), ("stream", [True], "BOOL"),
                               ("exclude_input_in_output", [True], "BOOL")]:
        arr = np.array(value, dtype={"BYTES": object, "INT32": np.int32, "BOOL": bool}[dtype])  # one row: no batch dim
        t = grpcclient.InferInput(name, list(arr.shape), dtype)
        t.set_data_from_numpy(arr)
        inputs.append(t)
    client.async_stream_infer(FR, inputs)
    deltas = []
    while True:
        result, error = results.get(timeout=60)
        assert error is None, error
        deltas.append(result.as_numpy("text_output").reshape(-1)[0].decode())
        if result.as_numpy("finish_reason").reshape(-1)[0]:
            break
    client.stop_stream()
    assert len(deltas) == 6
    direct = httpx.post(f"{triton.http_url}/v2/models/{FR}/generate",
                        json={"text_input": "Le noyau", "max_tokens": 6, "top_k": 1}, timeout=60).json()
    assert "Le noyau" + "".join(deltas) == direct["text_output"]


def test_gateway_via_triton_matches_embedded_engine(gateway, triton_gateway):
    body = {"prompts": PROMPTS, "tokens_to_generate": 24, "top_k": 1, "logprobs": True}
    embedded = httpx.put(gateway.url + "/api", json=body, timeout=120).json()
    via = httpx.put(triton_gateway.url + "/api", json=body, timeout=120).json()
    assert via["text"] == embedded["text"] and via["segments"] == embedded["segments"]
    for a, b in zip(via["logprobs"], embedded["logprobs"]):
        assert a == pytest.approx(b, abs=1e-4)
    body = {"prompt": PROMPTS[0], "max_tokens": 16, "temperature": 0, "model": ES}
    a = httpx.post(gateway.url + "/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
    b = httpx.post(triton_gateway.url + "/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
    assert a == b
    with httpx.stream("POST", triton_gateway.url + "/v1/completions", json={**body, "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert "".join(e["choices"][0]["text"] for e in events) == a


def test_structured_outputs_penalties_and_token_prompts_through_triton(gateway, triton_gateway):
    """The Triton CPU model takes the same constraint, penalties, logit bias and token-id prompt (new optional
    tensors of the contract): gateway → Triton answers what the embedded engine answers."""
    schema = {"type": "object", "properties": {"ville": {"enum": ["Paris", "Lyon"]}, "n": {"type": "integer"}},
              "required": ["ville", "n"], "additionalProperties": False}
    bodies = [
        {"prompt": "Réponse :", "max_tokens": 40, "temperature": 0, "response_format": {
            "type": "json_schema", "json_schema": {"name": "r", "schema": schema}}},
        {"prompt": "Le film est", "max_tokens": 6, "temperature": 1, "seed": 5, "n": 3,
         "guided_choice": [" bon", " mauvais"]},
        {"prompt": [5, 77, 300], "max_tokens": 12, "temperature": 0, "presence_penalty": 1.5,
         "frequency_penalty": 1.0, "repetition_penalty": 1.3, "logit_bias": {"42": 5.0}},
    ]
    for body in bodies:
        a = httpx.post(gateway.url + "/v1/completions", json=body, timeout=60)
        b = httpx.post(triton_gateway.url + "/v1/completions", json=body, timeout=60)
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert [c["text"] for c in a.json()["choices"]] == [c["text"] for c in b.json()["choices"]], body
    answer = httpx.post(triton_gateway.url + "/v1/completions", json=bodies[0], timeout=60).json()["choices"][0]
    assert answer["finish_reason"] == "stop" and json.loads(answer["text"])["ville"] in ("Paris", "Lyon")
    bad = httpx.post(triton_gateway.url + "/v1/completions", json={"prompt": "x", "guided_regex": "("}, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "guided_regex"


@pytest.mark.parametrize("which", ["gateway", "triton_gateway"])
def test_grpc_generate_stream(which, request):
    gw = request.getfixturevalue(which)
    pb2, pb2_grpc = load_stubs()
    with grpc.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as channel:
        stub = pb2_grpc.TextGenerationStub(channel)
        msg = pb2.GenerateRequest(prompt=PROMPTS[1], max_tokens=12, temperature=0, logprobs=0)
        parts = list(stub.GenerateStream(msg, timeout=60))
        whole = stub.Generate(msg, timeout=60)
        with pytest.raises(grpc.RpcError) as e:
            stub.Generate(pb2.GenerateRequest(prompt="x", top_p=1.5), timeout=60)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "top_p" in e.value.details()
    assert "".join(p.text for p in parts) == whole.text
    assert parts[-1].finish_reason == whole.finish_reason and parts[-1].usage.completion_tokens == 12
    assert sum(len(p.tokens) for p in parts) == 12 and all(t.logprob <= 0 for p in parts for t in p.tokens)
    rest = httpx.post(gw.url + "/v1/completions", json={"prompt": PROMPTS[1], "max_tokens": 12, "temperature": 0},
                      timeout=60).json()
    assert whole.text == rest["choices"][0]["text"]


def _metric(url: str, name: str, model: str) -> float:
    m = re.search(rf'^{name}\{{[^}}]*model="{model}"[^}}]*\}} (\S+)', httpx.get(url, timeout=5).text, re.M)
    return float(m.group(1)) if m else 0.0


def _cancel_mid_stream(gateway_url: str) -> None:
    # 32 rows of the longest generation: the batch takes seconds, so the cancellation arrives first even on a loaded CI
    body = {"prompt": ["Le"] * 32, "max_tokens": 510, "temperature": 0, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", gateway_url + "/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(4)]  # two events and their blank separators
        assert got[0].startswith("data: ")
    # leaving the block closes the connection mid-stream


def test_client_disconnect_cancels_in_the_embedded_engine(gateway):
    url = gateway.url + "/metrics"
    before = _metric(url, "glotta_cancelled_requests_total", FR)
    _cancel_mid_stream(gateway.url)
    assert _wait_for(lambda: _metric(url, "glotta_cancelled_requests_total", FR) > before, 20)
    assert _wait_for(lambda: _metric(url, "glotta_running_requests", FR) == 0, 20)


def test_client_disconnect_cancels_in_triton(triton, triton_gateway):
    url = f"http://127.0.0.1:{triton.metrics_port}/metrics"
    before = _metric(url, "glotta_engine_cancelled_total", FR)
    _cancel_mid_stream(triton_gateway.url)
    ok = _wait_for(lambda: _metric(url, "glotta_engine_cancelled_total", FR) > before, 20)
    assert ok, {k: _metric(url, f"glotta_engine_{k}", FR) for k in ("cancelled_total", "running", "waiting",
                                                                     "steps_total", "admitted_total")}
    assert _wait_for(lambda: _metric(url, "glotta_engine_running", FR) == 0, 20)


def test_triton_outage_503_then_recovery(tmp_path):
    server = TritonServer(REPO, [FR], free_port(), free_port(), free_port(), workdir=tmp_path / "t").start()
    gw = Gateway(["--model", FR, "--triton-url", server.grpc_url], tmp_path / "serve.log",
                 env={"GLOTTA_MODEL_REPOSITORY": str(REPO)})
    body = {"prompts": ["Le noyau"], "tokens_to_generate": 4, "top_k": 1}
    try:
        with httpx.Client(base_url=gw.url, timeout=60) as http:
            ok = http.put("/api", json=body).json()
            server.stop()
            assert _wait_for(lambda: http.get("/health/ready").status_code == 503, 15)
            assert http.get("/health/ready").json()["ready"] is False
            r = http.put("/api", json=body)
            assert r.status_code == 503 and "unavailable" in r.json()["message"]
            r = http.post("/v1/completions", json={"prompt": "Le", "max_tokens": 3, "stream": True})
            assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"
            assert http.get("/health/live").status_code == 200
            server.start()
            assert _wait_for(lambda: http.get("/health/ready").status_code == 200, 30)
            assert http.put("/api", json=body).json() == ok
    finally:
        gw.stop()
        server.stop()


def test_operator_commands_start_status_stop(tmp_path):
    env = {**os.environ, "GLOTTA_CACHE": str(tmp_path), "GLOTTA_MODEL_REPOSITORY": str(REPO)}
    base = free_port_block(3)

    def glotta(*args):
        return subprocess.run([sys.executable, "-m", "glotta.cli", "triton", *args], env=env,
                              capture_output=True, text=True, timeout=180)

    r = glotta("start", "--model", FR, "--base-port", str(base))
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert httpx.get(f"http://127.0.0.1:{base}/v2/models/{FR}/ready").status_code == 200
        status = glotta("status")
        assert status.returncode == 0 and "ready" in status.stdout + status.stderr
        again = glotta("start", "--base-port", str(base))
        assert again.returncode == 2 and "already running" in again.stdout + again.stderr
    finally:
        assert glotta("stop").returncode == 0
    assert _wait_for(lambda: not _reachable(f"http://127.0.0.1:{base}/v2/health/live"), 30)
    assert glotta("status").returncode == 1


def _reachable(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
        return True
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("fixture", ["gateway", "triton_gateway"])
def test_prefix_cache_embedded_and_in_triton(request, fixture):
    """The same few-shot-like prompt twice: the second reads its shared blocks from the cache — in the embedded
    engine and in the Triton CPU model (whose count reaches the gateway through `prompt_cached_tokens`) — with the
    same answer, and /metrics counts the cached tokens beside the prompt tokens."""
    gw = request.getfixturevalue(fixture)
    url = gw.url + "/metrics"
    prompt = "Question : quel est le noyau de Debian ? Réponse : Linux. " * 6 + f"Question : {fixture} ?"
    body = {"prompt": prompt, "max_tokens": 8, "temperature": 0}
    before = _metric(url, "glotta_prompt_tokens_cached_total", FR), _metric(url, "glotta_prompt_tokens_total", FR)
    if fixture == "triton_gateway":
        triton_metrics = f"http://127.0.0.1:{request.getfixturevalue('triton').metrics_port}/metrics"
        waited = _metric(triton_metrics, "glotta_engine_queue_wait_seconds_total", FR)
    answers = [httpx.post(gw.url + "/v1/completions", json=body, timeout=60).json() for _ in range(2)]
    assert answers[0]["choices"][0]["text"] == answers[1]["choices"][0]["text"]
    n = answers[0]["usage"]["prompt_tokens"]
    cached = _metric(url, "glotta_prompt_tokens_cached_total", FR) - before[0]
    assert _metric(url, "glotta_prompt_tokens_total", FR) - before[1] == 2 * n
    assert (n - 1) // 16 * 16 - 16 <= cached <= n - 1  # the second request's full blocks (the first may share some)
    if fixture == "triton_gateway":  # the engine inside Triton reports its own queue on Triton's metrics endpoint
        assert _wait_for(lambda: _metric(triton_metrics, "glotta_engine_admitted_total", FR) >= 2, 10)
        # each admitted prompt adds its (positive) wait: the sum grows with these two requests
        assert _wait_for(lambda: _metric(triton_metrics, "glotta_engine_queue_wait_seconds_total", FR) > waited, 10)
