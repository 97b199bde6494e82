"""One error model: every route answers in its API family's shape (Megatron's on /api, OpenAI's on /v1) with the
field to blame — body decoding, unknown paths and wrong methods included — and gRPC codes come from the same table."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
import pytest

from glotta.core.errors import ErrorKind, GlottaError
from glotta.server import error_responses as errors


def test_non_utf8_body_on_api_is_megatrons_shape(http):
    r = http.put("/api", content=b'{"prompts": ["\xff\xfe"]}')
    assert r.status_code == 400 and r.json() == {"message": "request body is not valid UTF-8 JSON", "param": "body"}


def test_non_utf8_body_on_v1_is_openais_shape(http):
    r = http.post("/v1/completions", content=b'{"prompt": "\xff\xfe"}')
    assert r.status_code == 400
    assert r.json()["error"] == {"message": "request body is not valid UTF-8 JSON", "type": "invalid_request_error",
                                 "param": "body", "code": None}  # OpenAI: a string or null, never the status


@pytest.mark.parametrize("method,path,status,param", [
    ("GET", "/api", 405, "method"), ("DELETE", "/v1/completions", 405, "method"),
    ("GET", "/no/such/route", 404, "path"), ("PUT", "/api/nothing", 404, "path")])
def test_unknown_routes_and_methods(http, method, path, status, param):
    r = http.request(method, path, json={})
    assert r.status_code == status
    body = r.json()
    if path.startswith("/api"):
        assert set(body) == {"message", "param"} and body["param"] == param
    else:
        assert body["error"]["param"] == param and body["error"]["code"] is None
    if status == 405:
        assert "allow" in r.headers


def test_v1_errors_name_v1_fields(http):
    """The engine's context check names `max_tokens` on /v1 and Megatron's `tokens_to_generate` on /api."""
    r = http.post("/v1/completions", json={"prompt": "Le", "max_tokens": 100000})
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == "max_tokens" and "max_tokens" in err["message"]
    assert "tokens_to_generate" not in r.text
    r = http.put("/api", json={"prompts": ["Le"], "tokens_to_generate": 100000})
    assert r.status_code == 400 and r.json()["param"] == "tokens_to_generate"
    assert r.json()["message"].startswith("Length of prompt + tokens_to_generate longer than allowed")


def test_template_input_errors_are_400(http):
    r = http.post("/v1/templates/sentiment-fr/run", json={"inputs": {}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "inputs.text"


def test_oversized_body_is_a_413_that_urllib_reads(guarded_small_body):
    """urllib writes the whole body before reading: without the lingering read it sees a reset connection."""
    url = guarded_small_body.url
    for path, method in (("/api", "PUT"), ("/v1/completions", "POST")):
        data = json.dumps({"prompts": ["x" * 3_000_000], "prompt": "x"}).encode()
        req = urllib.request.Request(url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=60)
        assert e.value.code == 413
        body = json.loads(e.value.read())
        assert "4096" in (body["message"] if path == "/api" else body["error"]["message"])


@pytest.fixture(scope="module")
def guarded_small_body(tmp_path_factory):
    from .conftest import FR, REPO, Gateway

    gw = Gateway(["--model", FR, "--threads", "1", "--max-body-bytes", "4096"],
                 tmp_path_factory.mktemp("small-body") / "serve.log", env={"GLOTTA_MODEL_REPOSITORY": str(REPO)})
    yield gw
    gw.stop()


@pytest.mark.parametrize("kind,status,code", [
    (ErrorKind.INVALID, 400, grpc.StatusCode.INVALID_ARGUMENT), (ErrorKind.NOT_FOUND, 404, grpc.StatusCode.NOT_FOUND),
    (ErrorKind.OVERLOADED, 429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ErrorKind.UNAVAILABLE, 503, grpc.StatusCode.UNAVAILABLE), (ErrorKind.TIMEOUT, 504,
                                                                grpc.StatusCode.DEADLINE_EXCEEDED)])
def test_one_table_for_http_and_grpc(kind, status, code):
    e = GlottaError(kind, "m", "max_new_tokens", retry_after=1 if kind is ErrorKind.OVERLOADED else None)
    assert errors.CODES[kind][0] == status and errors.grpc_code(e) == code
    assert errors.body("megatron", e) == {"message": "m", "param": "tokens_to_generate"}
    assert errors.body("openai", e)["error"]["param"] == "max_tokens"
    assert ("Retry-After" in errors.headers(e)) == (kind is ErrorKind.OVERLOADED)


def test_every_kind_has_a_status_and_a_grpc_code():
    assert set(errors.CODES) == set(ErrorKind)


def test_grpc_unknown_model_is_not_found(gateway):
    from glotta.server.grpc_api import load_stubs

    pb2, pb2_grpc = load_stubs()
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = pb2_grpc.TextGenerationStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            stub.Generate(pb2.GenerateRequest(prompt="Le", model="no-such-model"), timeout=30)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and "no-such-model" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.Generate(pb2.GenerateRequest(prompt="Le", max_tokens=100000), timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_tokens" in e.value.details()
