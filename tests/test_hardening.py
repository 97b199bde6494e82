"""Limits, overload, timeouts, disconnects, auth, hostile input, graceful shutdown and a schema fuzz run."""

import asyncio
import concurrent.futures as cf
import re
import signal
import socket
import threading
import time

import grpc
import httpx
import pytest

from glotta.core.errors import GlottaError
from glotta.server.engine.interface import GenerationRequest, SamplingParams, StopConditions
from glotta.server.engine.onnx_engine import OnnxEngine
from glotta.server.limits import GuardedEngine, Limits

from .conftest import FR, REPO, Gateway

LONG = {"prompt": "Le", "max_tokens": 400, "temperature": 0, "ignore_eos": True}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A gateway with API keys (flag, file, environment), a small body limit, 4 rows (prompts) in flight."""
    d = tmp_path_factory.mktemp("guarded")
    (d / "keys.txt").write_text("# operators\nkey-from-file\n")
    gw = Gateway(["--model", FR, "--threads", "1", "--api-key", "key-from-flag", "--api-key-file",
                  str(d / "keys.txt"), "--max-body-bytes", "4096", "--max-inflight-rows", "4"],
                 d / "serve.log", env={"GLOTTA_MODEL_REPOSITORY": str(REPO), "GLOTTA_API_KEYS": "key-from-env"})
    yield gw
    gw.stop()


def _auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_auth_matrix(guarded):
    body = {"prompts": ["Le"], "tokens_to_generate": 2}
    with httpx.Client(base_url=guarded.url, timeout=60) as c:
        denied = [c.put("/api", json=body), c.put("/api", json=body, headers=_auth("wrong")),
                  c.put("/api", json=body, headers={"Authorization": "Basic a2V5LWZyb20tZmxhZw=="}),
                  c.put("/api", json=body, headers={"Authorization": "Bearer"})]
        assert {r.status_code for r in denied} == {401}
        assert len({r.text for r in denied}) == 1, "a 401 must not say which part failed"
        assert c.post("/v1/completions", json={"prompt": "Le"}).status_code == 401
        assert c.get("/v1/models").status_code == 401 and c.get("/v1/templates").status_code == 401
        assert c.post("/v1/templates/sentiment-fr/run", json={"inputs": {"text": "x"}}).status_code == 401
        for key in ("key-from-flag", "key-from-file", "key-from-env"):  # every source, on every door
            assert c.put("/api", json=body, headers=_auth(key)).status_code == 200, key
            assert c.post("/v1/templates/sentiment-fr/run", json={"inputs": {"text": "Super."}, "mode": "generate"},
                          headers=_auth(key)).status_code == 200, key
            assert _grpc_generate(guarded, (("authorization", f"Bearer {key}"),)).finish_reason, key
        with pytest.raises(grpc.RpcError) as e:
            _grpc_generate(guarded, ())
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for open_path in ("/health/live", "/health/ready", "/metrics", "/openapi.json"):
            assert c.get(open_path).status_code == 200, open_path
    log = guarded.log.read_text()
    assert "key-from-flag" not in log and "key-from-file" not in log and "key-from-env" not in log


def _grpc_generate(gw, metadata):
    from glotta.server.grpc_api import load_stubs

    pb2, pb2_grpc = load_stubs()
    with grpc.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as channel:
        return pb2_grpc.TextGenerationStub(channel).Generate(pb2.GenerateRequest(prompt="Le", max_tokens=2),
                                                             metadata=metadata, timeout=60)


def test_body_limit_413(guarded):
    big = {"prompts": ["x" * 5000], "tokens_to_generate": 1}
    with httpx.Client(base_url=guarded.url, timeout=60, headers=_auth("key-from-flag")) as c:
        r = c.put("/api", json=big)
        assert r.status_code == 413 and "4096" in r.json()["message"]

        def chunks():  # no Content-Length: the limit is enforced while reading
            yield b'{"prompt": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}'

        r = c.post("/v1/completions", content=chunks())
        assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"


def test_burst_beyond_the_limit_gets_429_at_once(guarded):
    """2-prompt requests against 4 rows: two fit at once, the rest are refused whole (never half admitted)."""
    def call(_):
        return httpx.post(guarded.url + "/v1/completions", json={**LONG, "prompt": ["Le", "La"], "max_tokens": 200},
                          headers=_auth("key-from-flag"), timeout=60)

    with cf.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(call, range(10)))
    codes = [r.status_code for r in results]
    assert codes.count(200) >= 2 and codes.count(429) >= 1, codes
    assert set(codes) <= {200, 429}
    rejected = next(r for r in results if r.status_code == 429)
    assert rejected.headers["Retry-After"] == "1" and "overloaded" in rejected.json()["error"]["message"]
    assert all(len(r.json()["choices"]) == 2 for r in results if r.status_code == 200)
    metrics = httpx.get(guarded.url + "/metrics").text
    m = re.search(r'glotta_rejected_requests_total\{model="glotta-fr-tiny",reason="overloaded"\} (\S+)', metrics)
    assert m and float(m.group(1)) >= codes.count(429)


def test_request_timeout_504_then_the_slot_is_free(tmp_path):
    gw = Gateway(["--model", FR, "--threads", "1", "--request-timeout", "0.05"], tmp_path / "serve.log",
                 env={"GLOTTA_MODEL_REPOSITORY": str(REPO)})
    try:
        r = httpx.post(gw.url + "/v1/completions", json={**LONG, "max_tokens": 500}, timeout=60)
        assert r.status_code == 504 and "request timeout (0.05 s)" in r.json()["error"]["message"]
        from glotta.server.grpc_api import load_stubs

        pb2, pb2_grpc = load_stubs()
        with grpc.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as channel:  # the same error, as gRPC sees it
            with pytest.raises(grpc.RpcError) as e:
                pb2_grpc.TextGenerationStub(channel).Generate(
                    pb2.GenerateRequest(prompt="Le", max_tokens=500, temperature=0, ignore_eos=True), timeout=60)
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "request timeout" in e.value.details()
        assert httpx.put(gw.url + "/api", json={"prompts": ["Le"], "tokens_to_generate": 2}).status_code == 200
        deadline = time.time() + 10
        while _metric(gw.url, "glotta_running_requests") and time.time() < deadline:
            time.sleep(0.05)
        assert _metric(gw.url, "glotta_running_requests") == 0
    finally:
        gw.stop()


def test_queue_timeout_leaves_the_batch(test_model):
    path, _, _ = test_model

    async def go():
        engine = OnnxEngine(path, threads=1)
        guarded = GuardedEngine(engine, Limits(queue_timeout_s=1e-6))
        await engine.start()
        req = GenerationRequest("Le", 50, SamplingParams(top_k=1), StopConditions(stop_on_eod=False))
        with pytest.raises(GlottaError, match="queue timeout"):
            async for _ in guarded.generate(req):
                pass
        for _ in range(100):
            if engine.stats()["running"] == 0 and engine.stats()["waiting"] == 0:
                break
            await asyncio.sleep(0.01)
        stats = engine.stats()
        await engine.stop()
        return stats, guarded.inflight

    stats, inflight = asyncio.run(go())
    assert stats["running"] == 0 and stats["waiting"] == 0 and inflight == 0


def _metric(url: str, name: str) -> float:
    m = re.search(rf'^{name}\{{model="{FR}"\}} (\S+)', httpx.get(url + "/metrics").text, re.M)
    return float(m.group(1)) if m else 0.0


def test_disconnect_of_a_non_streaming_client_frees_its_slot(gateway):
    before = _metric(gateway.url, "glotta_cancelled_requests_total")
    body = httpx.Request("POST", gateway.url + "/v1/completions", json=LONG)
    raw = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body.content)}\r\n\r\n").encode() + body.content
    with socket.create_connection(("127.0.0.1", gateway.port)) as s:
        s.sendall(raw)
        deadline = time.time() + 20
        while _metric(gateway.url, "glotta_running_requests") == 0 and time.time() < deadline:
            time.sleep(0.01)
    deadline = time.time() + 20
    while _metric(gateway.url, "glotta_cancelled_requests_total") <= before and time.time() < deadline:
        time.sleep(0.05)
    assert _metric(gateway.url, "glotta_cancelled_requests_total") > before
    assert _metric(gateway.url, "glotta_running_requests") == 0


@pytest.mark.parametrize("path,raw", [
    ("/api", b'{"prompts": ["a"], "temperature": NaN}'),
    ("/api", b'{"prompts": ["a"], "temperature": Infinity}'),
    ("/api", b'{"prompts": ["a"], "tokens_to_generate": 100000000000000000000000000000000000000}'),
    ("/api", b'{"prompts": ["\xff\xfe"]}'),
    ("/api", b'{"prompts": [["nested"]], "tokens_to_generate": 1}'),
    ("/v1/completions", b'{"prompt": "a", "temperature": NaN}'),
    ("/v1/completions", b'{"prompt": "a", "top_p": -Infinity}'),
    ("/v1/completions", b'{"prompt": "a", "max_tokens": 1e400}'),
    ("/v1/completions", b'{"prompt": "a", "seed": 99999999999999999999999999}'),
    ("/v1/completions", b'{"prompt": "\xc3\x28"}'),
    ("/v1/completions", b'{"prompt": {"a": 1}}'),
    ("/v1/completions", b'[]'),
])
def test_hostile_bodies_get_4xx(http, path, raw):
    r = http.request("PUT" if path == "/api" else "POST", path, content=raw)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert "Traceback" not in r.text


def test_request_id_is_echoed_or_made(http):
    assert http.get("/health/live", headers={"X-Request-Id": "abc-123"}).headers["x-request-id"] == "abc-123"
    assert re.fullmatch(r"[0-9a-f]{32}", http.get("/health/live").headers["x-request-id"])


def test_sigterm_drains_in_flight_requests(tmp_path):
    gw = Gateway(["--model", FR, "--threads", "1", "--drain-timeout", "20"], tmp_path / "serve.log",
                 env={"GLOTTA_MODEL_REPOSITORY": str(REPO)})
    result = {}

    def long_call():
        result["r"] = httpx.post(gw.url + "/v1/completions", json=LONG, timeout=60)

    t = threading.Thread(target=long_call)
    t.start()
    deadline = time.time() + 20
    while _metric(gw.url, "glotta_running_requests") == 0 and time.time() < deadline:
        time.sleep(0.01)
    gw.proc.send_signal(signal.SIGTERM)
    t.join(60)
    assert result["r"].status_code == 200
    assert result["r"].json()["usage"]["completion_tokens"] == 400
    assert gw.proc.wait(30) == 0  # a drained stop is a clean exit
    with pytest.raises(httpx.ConnectError):
        httpx.get(gw.url + "/health/live", timeout=2)


def test_lone_surrogates_and_tiny_temperature_are_not_server_errors(http):
    r = http.put("/api", content=b'{"prompts": ["abc \\udb5b def"], "tokens_to_generate": 2}')
    assert r.status_code == 400 and r.json()["param"] == "prompts"  # the /api field, by its wire name
    r = http.post("/v1/completions", content=b'{"prompt": "a", "stop": ["\\ud800"], "max_tokens": 2}')
    assert r.status_code == 400 and r.json()["error"]["param"] == "stop"
    r = http.put("/api", json={"prompts": ["Le"], "tokens_to_generate": 3, "temperature": 5e-324, "top_k": 6})
    assert r.status_code == 200
