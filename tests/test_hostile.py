"""The gateway as a hostile client meets it, on real servers: every door locked alike, every bound hit once with the
health latency measured meanwhile, connections that never finish, browsers' simple requests, surrogates in every
string field, and stops that overrun their drain (docs/security.md states what these tests hold)."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import grpc
import httpx
import psutil
import pytest

from glotta.core.net import free_port
from glotta.modeling.spec import ModelSpec
from glotta.server import bounds
from glotta.server.grpc_api import load_stubs

from .conftest import FR, REPO, Gateway, wait_for

ENV = {"GLOTTA_MODEL_REPOSITORY": str(REPO)}
KEY = "hostile-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
pb2, pb2_grpc = load_stubs()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """Keys required, 4 rows in flight, short connection timeouts, few connections."""
    gw = Gateway(["--model", FR, "--threads", "1", "--api-key", KEY, "--max-inflight-rows", "4",
                  "--header-timeout", "2", "--body-timeout", "2", "--max-connections", "40"],
                 tmp_path_factory.mktemp("keyed") / "serve.log", env=ENV)
    yield gw
    gw.stop()


@contextmanager
def health_watch(url: str):
    """Polls /health/live every 50 ms in a thread; yields the list of latencies (the worst must stay under 1 s)."""
    latencies: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                t = time.perf_counter()
                c.get(url + "/health/live")
                latencies.append(time.perf_counter() - t)
                time.sleep(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield latencies
    finally:
        time.sleep(0.2)
        stop.set()
        thread.join(30)


# -- one auth rule for every door ---------------------------------------------------------------------------------

def _grpc_call(gw, metadata=(), stream=False):
    with grpc.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as ch:
        stub = pb2_grpc.TextGenerationStub(ch)
        req = pb2.GenerateRequest(prompt="Le", max_tokens=2, temperature=0)
        if stream:
            return list(stub.GenerateStream(req, metadata=metadata, timeout=30))
        return stub.Generate(req, metadata=metadata, timeout=30)


@pytest.mark.parametrize("stream", [False, True])
def test_grpc_needs_the_key_rest_needs(keyed, stream):
    for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", KEY),)):
        with pytest.raises(grpc.RpcError) as e:
            _grpc_call(keyed, metadata, stream)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and e.value.details() == "Unauthorized"
    ok = _grpc_call(keyed, (("authorization", f"Bearer {KEY}"),), stream)
    assert (ok[-1] if stream else ok).finish_reason == "length"


def test_every_http_door_needs_the_key(keyed):
    doors = [("PUT", "/api", {"prompts": ["Le"], "tokens_to_generate": 1}),
             ("POST", "/v1/completions", {"prompt": "Le", "max_tokens": 1}),
             ("GET", "/v1/models", None), ("GET", "/v1/templates", None), ("GET", "/v1/templates/sentiment-fr", None),
             ("POST", "/v1/templates/sentiment-fr/run", {"inputs": {"text": "Super."}, "mode": "generate"})]
    with httpx.Client(base_url=keyed.url, timeout=60) as c:
        for method, path, body in doors:
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": KEY}):
                r = c.request(method, path, json=body, headers=headers)
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, headers)
                if path.startswith("/v1"):
                    assert r.json()["error"]["code"] == "invalid_api_key"
            assert c.request(method, path, json=body, headers=AUTH).status_code == 200, path
        for open_path in ("/health/live", "/health/ready", "/metrics", "/playground", "/openapi.json"):
            assert c.get(open_path).status_code == 200, open_path


def _listening(pid: int) -> dict[int, bool]:
    """Each listening port of the process, and whether its address is loopback (a v4-mapped ::ffff:127.0.0.1 too)."""
    def loopback(ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        return (getattr(addr, "ipv4_mapped", None) or addr).is_loopback

    return {c.laddr.port: loopback(c.laddr.ip) for c in psutil.Process(pid).net_connections() if c.status == "LISTEN"}


def test_default_bind_is_loopback_and_grpc_follows_host(tmp_path):
    """Without --host both ports listen on loopback only; with --host, gRPC binds where REST does."""
    for host_args, expected in (([], True), (["--host", "localhost"], True), (["--host", "0.0.0.0"], False)):
        port, grpc_port = free_port(), free_port()
        proc = subprocess.Popen([sys.executable, "-m", "glotta.cli", "serve", "--model", FR, "--threads", "1",
                                 "--port", str(port), "--grpc-port", str(grpc_port), *host_args],
                                env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            assert wait_for(lambda: {port, grpc_port} <= set(_listening(proc.pid)), 120)
            listening = _listening(proc.pid)
            assert listening[port] == expected and listening[grpc_port] == expected, listening
        finally:
            proc.terminate()
            proc.wait(60)


# -- bounded work, decided before any work --------------------------------------------------------------------------

BIG = "Le chat dort. " * 110_000  # 1.5 MB: under the 2 MB body limit, far over a 512-token context


@pytest.mark.parametrize("method,path,body,param,bound", [
    ("POST", "/v1/templates/sentiment-fr/run", {"inputs": {"text": "x"}, "examples": [0] * 200_000}, "examples",
     str(bounds.MAX_TEMPLATE_EXAMPLES)),
    ("POST", "/v1/templates/sentiment-fr/run", {"inputs": {"text": "x"}, "k": 33}, "k", "32"),
    ("POST", "/v1/templates/sentiment-fr/run", {"inputs": {"text": "x" * 16_385}}, "inputs.text", "16384"),
    ("POST", "/v1/templates/sentiment-fr/run", {"inputs": {"text": BIG[:16_000]}, "max_tokens": 513}, "max_tokens",
     "512"),
    ("POST", "/v1/completions", {"prompt": "Le", "stop": ["x"] * 17}, "stop", "16"),
    ("POST", "/v1/completions", {"prompt": "Le", "stop": ["x" * 257]}, "stop", "256"),
    ("POST", "/v1/completions", {"prompt": "Le", "logprobs": 6}, "logprobs", "5"),
    ("POST", "/v1/completions", {"prompt": ["Le"] * 129}, "prompt", "128"),
    ("PUT", "/api", {"prompts": ["Le"] * 129}, "prompts", "128"),
    ("POST", "/v1/completions", {"prompt": BIG, "max_tokens": 1}, "prompt", "512"),
    ("PUT", "/api", {"prompts": [BIG[:1_000_000]], "tokens_to_generate": 1}, "prompts", "512"),
])
def test_each_bound_is_a_400_naming_it_while_health_answers(keyed, method, path, body, param, bound):
    with health_watch(keyed.url) as latencies:
        t = time.perf_counter()
        r = httpx.request(method, keyed.url + path, json=body, headers=AUTH, timeout=60)
        took = time.perf_counter() - t
    assert r.status_code == 400, r.text
    err = r.json() if path == "/api" else r.json()["error"]
    assert err["param"] == param and bound in err["message"], err
    assert max(latencies) < 1.0, f"health stalled {max(latencies):.2f} s while the request took {took:.2f} s"


def test_a_long_prompt_the_context_allows_is_tokenized_off_the_event_loop(tmp_path):
    """A context large enough that the cheap bound lets a 1.5 MB prompt through: it is tokenized in full (~400k tokens,
    then refused for its length in tokens, before the model runs), and health answers all the while."""
    model = tmp_path / "long-context"
    model.mkdir()
    for f in ("tokenizer.json", "1"):
        os.symlink(REPO / FR / f, model / f)
    spec = ModelSpec.read(REPO / FR)
    spec.with_(name="long-context", architecture=replace(spec.architecture, n_positions=100_000)).write(model)
    gw = Gateway(["--model", str(model), "--threads", "1"], tmp_path / "serve.log", env=ENV)
    try:
        with health_watch(gw.url) as latencies:
            r = httpx.post(gw.url + "/v1/completions", json={"prompt": BIG, "max_tokens": 1}, timeout=120)
        assert r.status_code == 400 and "Length of prompt" in r.json()["error"]["message"]  # counted in tokens
        assert max(latencies) < 1.0, max(latencies)
    finally:
        gw.stop()


def test_a_request_that_can_never_fit_is_a_400_not_a_429(keyed):
    with httpx.Client(base_url=keyed.url, headers=AUTH, timeout=60) as c:
        for _ in range(3):  # on an idle server, every time: a retry could never succeed, so no 429
            r = c.put("/api", json={"prompts": ["Le"] * 5, "tokens_to_generate": 1})
            assert r.status_code == 400 and "at most 4" in r.json()["message"] and "Retry-After" not in r.headers
            r = c.post("/v1/completions", json={"prompt": ["Le"] * 5, "max_tokens": 1})
            assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
        assert c.put("/api", json={"prompts": ["Le"] * 4, "tokens_to_generate": 1}).status_code == 200
    assert wait_for(lambda: _metric(keyed.url, "glotta_inflight_rows") == 0, 30)


def test_admission_is_whole_requests_counted_in_rows():
    """The guard of a real engine: rows held by one request leave room for what fits, not for a larger request."""
    import asyncio

    from glotta.core.errors import ErrorKind, GlottaError
    from glotta.server.engine.interface import GenerationRequest
    from glotta.server.engine.onnx_engine import OnnxEngine
    from glotta.server.limits import GuardedEngine, Limits

    guard = GuardedEngine(OnnxEngine(REPO / FR, threads=1), Limits(max_inflight_rows=4))
    with guard.admit(3):
        with pytest.raises(GlottaError) as e:
            guard.admit(2)
        assert e.value.kind is ErrorKind.OVERLOADED and e.value.retry_after == 1 and guard.inflight == 3
        with guard.admit(1):
            assert guard.inflight == 4
    assert guard.inflight == 0
    with pytest.raises(GlottaError) as e:
        guard.admit(5)
    assert e.value.kind is ErrorKind.INVALID and "at most 4" in e.value.message

    async def stream_under_admission() -> int:  # generations started under an admission do not count again
        await guard.start()
        try:
            with guard.admit(2):
                async def one():
                    return [c async for c in guard.generate(GenerationRequest("Le", 2))]
                await asyncio.gather(one(), one())
                return guard.inflight
        finally:
            await guard.stop()

    assert asyncio.run(stream_under_admission()) == 2 and guard.inflight == 0


def _metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + "{") and f'model="{FR}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- text that is not text, bodies that are not JSON ----------------------------------------------------------------

@pytest.mark.parametrize("method,path,raw,param", [
    ("POST", "/v1/completions", b'{"prompt": "Le", "model": "\\ud800"}', "model"),
    ("POST", "/v1/completions", b'{"prompt": ["ok", "a\\udfff"]}', "prompt"),
    ("POST", "/v1/completions", b'{"prompt": "Le", "stop": ["\\udc80"]}', "stop"),
    ("POST", "/v1/completions", b'{"prompt": "Le", "user": "\\ud83d"}', "user"),
    ("PUT", "/api", b'{"prompts": ["Le"], "model": "\\ud800"}', "model"),
    ("PUT", "/api", b'{"prompts": ["\\udbff x"]}', "prompts"),
    ("POST", "/v1/templates/sentiment-fr/run", b'{"inputs": {"text": "\\ud800"}}', "inputs.text"),
    ("POST", "/v1/templates/sentiment-fr/run", b'{"inputs": {"\\ud800": "x"}}', "inputs.<key>"),
    ("POST", "/v1/templates/sentiment-fr/run", b'{"inputs": {"text": "x"}, "model": "\\udc00"}', "model"),
])
def test_lone_surrogates_in_every_string_field_are_400s(keyed, method, path, raw, param):
    r = httpx.request(method, keyed.url + path, content=raw, headers=AUTH, timeout=60)
    assert r.status_code == 400, r.text
    assert (r.json() if path == "/api" else r.json()["error"])["param"] == param


@pytest.mark.parametrize("method,path", [("POST", "/v1/completions"), ("PUT", "/api"),
                                         ("POST", "/v1/templates/sentiment-fr/run")])
def test_a_cross_site_simple_request_is_refused(keyed, method, path):
    """What a web page can send without a preflight: text/plain with a JSON body. 415, and nothing generated."""
    before = _metric(keyed.url, "glotta_inflight_rows")
    body = b'{"prompt": "Le", "prompts": ["Le"], "inputs": {"text": "x"}}'
    r = httpx.request(method, keyed.url + path, content=body, timeout=60,
                      headers={**AUTH, "Content-Type": "text/plain", "Origin": "https://evil.example"})
    assert r.status_code == 415 and "access-control-allow-origin" not in r.headers
    assert _metric(keyed.url, "glotta_inflight_rows") == before


def test_integers_are_strict_and_openai_error_codes_are_strings_or_null(keyed):
    with httpx.Client(base_url=keyed.url, headers=AUTH, timeout=60) as c:
        for field, value in (("max_tokens", "5"), ("max_tokens", True), ("temperature", "0.5"), ("echo", 1),
                             ("n", "1"), ("logprobs", "2")):
            r = c.post("/v1/completions", json={"prompt": "Le", field: value})
            assert r.status_code == 400 and r.json()["error"]["param"] == field, (field, r.text)
        assert c.post("/v1/completions", json={"prompt": "Le", "max_tokens": 2.0}).status_code == 200  # JSON Schema
        codes = [c.post("/v1/completions", json={"prompt": "Le", "max_tokens": 10_000}).json()["error"]["code"],
                 c.post("/v1/completions", json={"prompt": "Le", "model": "nope"}).json()["error"]["code"],
                 c.post("/v1/completions", json={"prompt": 5}).json()["error"]["code"]]
        assert codes == ["context_length_exceeded", "model_not_found", None]
        r = c.post("/v1/completions", json={"prompt": "", "max_tokens": 2, "temperature": 0})
        assert r.status_code == 200 and "add_bos" not in r.text  # OpenAI: an empty prompt starts a new document


def test_openapi_documents_the_400_it_sends(keyed):
    doc = httpx.get(keyed.url + "/openapi.json").json()
    ops = [op for p, methods in doc["paths"].items() if not p.startswith(("/health", "/metrics"))
           for op in methods.values()]
    assert ops and not any("422" in op["responses"] for op in ops)
    run = doc["paths"]["/v1/templates/{name}/run"]["post"]["responses"]
    assert run["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/OpenAIError"}
    assert doc["paths"]["/api"]["put"]["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MegatronError"}
    assert doc["paths"]["/api"]["put"]["security"] == [{"bearer": []}]


# -- connection hygiene --------------------------------------------------------------------------------------------

def _half_sent(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
    return s


def _closed_by_server(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        while s.recv(4096):
            pass
        return True
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionError:
        return True


def test_half_sent_headers_are_closed_and_their_slots_freed(keyed):
    socks = [_half_sent(keyed.port) for _ in range(30)]
    try:
        with health_watch(keyed.url) as latencies:
            closed = [_closed_by_server(s, 10) for s in socks]  # --header-timeout 2
        assert all(closed) and max(latencies) < 1.0
        # --max-connections 40: beyond it a new connection is refused at once; once closed, the slots are free
        extra = [socket.create_connection(("127.0.0.1", keyed.port)) for _ in range(45)]
        try:
            refused = [s for s in extra if _closed_by_server(s, 0.5)]
            assert len(refused) >= 5
        finally:
            for s in extra:
                s.close()
        assert wait_for(lambda: httpx.get(keyed.url + "/health/live").status_code == 200, 10)
    finally:
        for s in socks:
            s.close()


def test_a_body_that_never_arrives_is_a_408(keyed):
    with socket.create_connection(("127.0.0.1", keyed.port)) as s:
        s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"prompt\"".encode())
        s.settimeout(10)
        reply = b""
        while chunk := s.recv(4096):  # the server closes after its answer
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 408") and b"within 2 s" in reply


def test_oversized_headers_are_a_431(keyed):
    with socket.create_connection(("127.0.0.1", keyed.port)) as s:
        s.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\n")
        s.settimeout(10)
        assert s.recv(4096).startswith(b"HTTP/1.1 431")


# -- browser safety ------------------------------------------------------------------------------------------------

def test_security_headers_on_pages_and_api(keyed):
    page = httpx.get(keyed.url + "/playground")
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'sha256-" in csp and "unsafe-inline" not in csp.split(
        "script-src")[1].split(";")[0]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    api = httpx.post(keyed.url + "/v1/completions", json={"prompt": "Le", "max_tokens": 1}, headers=AUTH)
    assert api.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert api.headers["x-content-type-options"] == "nosniff" and api.headers["cache-control"] == "no-store"
    docs = httpx.get(keyed.url + "/docs")
    assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]


# -- shutdown that tells the client ----------------------------------------------------------------------------------

def test_a_drain_overrun_ends_each_request_with_its_reason(tmp_path):
    """SIGTERM with generations far longer than --drain-timeout: the non-streaming request gets a 503 that says why,
    the SSE stream a final error event and [DONE], a gRPC stream UNAVAILABLE; the process exits 0."""
    gw = Gateway(["--model", FR, "--threads", "1", "--drain-timeout", "1", "--max-batch", "2",
                  "--max-rows-per-request", "1"], tmp_path / "serve.log", env=ENV)
    # 32 prompts × 480 tokens, one row at a time per request: many seconds of work each
    body = {"prompt": ["Le"] * 32, "max_tokens": 480, "temperature": 0, "ignore_eos": True}
    out: dict = {}
    started = threading.Event()

    def sse() -> None:
        with httpx.stream("POST", gw.url + "/v1/completions", json={**body, "stream": True}, timeout=60) as r:
            lines = []
            for line in r.iter_lines():
                lines.append(line)
                started.set()
        out["sse"] = [x[6:] for x in lines if x.startswith("data: ")]

    def plain() -> None:
        r = httpx.post(gw.url + "/v1/completions", json=body, timeout=60)
        out["plain"] = (r.status_code, r.json())

    def grpc_stream() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as ch:
            req = pb2.GenerateRequest(prompt="Le", max_tokens=480, temperature=0, ignore_eos=True)
            try:
                n = sum(1 for _ in pb2_grpc.TextGenerationStub(ch).GenerateStream(req, timeout=60))
                out["grpc"] = ("complete", n, time.monotonic())
            except grpc.RpcError as e:
                out["grpc"] = (e.code(), e.details(), time.monotonic())

    threads = [threading.Thread(target=f) for f in (sse, plain)]
    for t in threads:
        t.start()
    assert started.wait(60)
    grpc_thread = threading.Thread(target=grpc_stream)
    grpc_thread.start()
    time.sleep(0.3)
    stopped_at = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    for t in (*threads, grpc_thread):
        t.join(60)
    assert gw.proc.wait(30) == 0
    reason = "drain timeout (1 s) passed before this request finished"
    status, answer = out["plain"]
    assert status == 503 and reason in answer["error"]["message"] and answer["error"]["type"] == "service_unavailable"
    assert out["sse"][-1] == "[DONE]" and reason in json.loads(out["sse"][-2])["error"]["message"]
    code, detail, ended = out["grpc"]
    if ended > stopped_at + 1:  # still running when the drain ran out (a stream that ended before may be whole)
        assert code == grpc.StatusCode.UNAVAILABLE and reason in detail
    else:
        assert code == "complete" and detail == 480


def test_schemathesis_with_every_check(keyed, tmp_path):
    """Every check schemathesis has, on every route with a schema (templates included), with the key."""
    exe = Path(sys.executable).with_name("schemathesis")
    config = Path(__file__).with_name("schemathesis.toml")
    r = subprocess.run([str(exe), "--config-file", str(config), "run", f"{keyed.url}/openapi.json",
                        "--checks", "all", "--max-examples", "25", "--phases", "examples,coverage,fuzzing",
                        "-H", f"Authorization: Bearer {KEY}"], capture_output=True, text=True, timeout=900,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-4000:]
    assert re.search(r"(\d+) generated, \1 passed", r.stdout), r.stdout[-2000:]


def test_the_bounds_the_docs_list_are_the_enforced_ones():
    """README and docs/security.md list the bounds of server/bounds.py, value for value."""
    root = Path(__file__).resolve().parents[1]
    rows = {f"| {b.name} | {b.value} | {b.fields} |" for b in bounds.table()}
    for doc in (root / "README.md", root / "docs" / "security.md"):
        text = doc.read_text()
        lines = {line.strip() for line in text.splitlines()}
        assert rows <= lines, (doc.name, rows - lines)
