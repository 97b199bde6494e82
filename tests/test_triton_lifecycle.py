"""Triton in production: a launched tritonserver and its stubs end with the gateway however it ends; ports held by
another server are refused; the CPU model takes one row and validates like the gateway; replicas fail over."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient

from glotta.core.errors import GlottaError
from glotta.core.net import free_port, free_port_block
from glotta.server.engine.interface import GenerationRequest, SamplingParams, check_request
from glotta.server.triton.contract import triton_message
from glotta.server.triton.launcher import TritonLaunchError, TritonServer, busy_ports
from glotta.server.triton.watchdog import stop_group

from .conftest import FR, REPO, Gateway
from .conftest import wait_for as _wait

ENV = {**os.environ, "GLOTTA_MODEL_REPOSITORY": str(REPO)}


def _group(pgid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid:
                out.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return out


def _tritonserver_of(http_port: int) -> psutil.Process | None:
    for p in psutil.process_iter(["name", "cmdline"]):
        if p.info["cmdline"] and f"--http-port={http_port}" in p.info["cmdline"]:
            return p
    return None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_fault_cycle_leaves_no_tritonserver_or_stub(tmp_path, sig):
    """start → 48 concurrent /api requests → signal to the gateway process → within 30 s nothing of that run is
    left, and the same ports start again. Three cycles: SIGTERM, SIGINT and SIGKILL (no handler can run)."""
    base, port = free_port_block(3), free_port()
    args = ["serve", "--engine", "triton", "--model", FR, "--triton-base-port", str(base), "--host", "127.0.0.1",
            "--port", str(port), "--grpc-port", "0"]
    for cycle in range(2):  # the second start proves the ports were freed
        log = (tmp_path / f"serve-{cycle}.log").open("wb")
        gw = subprocess.Popen([sys.executable, "-m", "glotta.cli", *args], env=ENV, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        assert _wait(lambda: gw.poll() is None and _ready(url), 180), (tmp_path / f"serve-{cycle}.log").read_text()
        triton = _tritonserver_of(base)
        assert triton is not None
        cmdline = triton.info["cmdline"]
        assert _shm_of(cmdline)  # the regions it made, found by their prefix
        members = _group(triton.pid)
        assert any("triton_python_backend_stub" in " ".join(p.cmdline()) for p in members), "no stub found"
        if cycle == 1:
            break
        with ThreadPoolExecutor(48) as pool:
            body = {"prompts": ["Le noyau Linux"], "tokens_to_generate": 48, "top_k": 1}
            futures = [pool.submit(_put, url, body) for _ in range(48)]
            time.sleep(1.5)  # requests in flight in Triton's stub
            gw.send_signal(sig)
            outcomes = [_outcome(f) for f in futures]  # each ends (none hangs), and how depends on the signal
        if sig == signal.SIGKILL:  # no handler ran: a dropped connection is all a client can get
            assert set(outcomes) <= {200, 503, "dropped"}, outcomes
        else:  # drained: an answer, or a 503 that says why — never a cut connection
            assert set(outcomes) <= {200, 503} and 200 in outcomes, outcomes
        gw.wait(60)
        assert _wait(lambda: not _group(triton.pid), 30), [p.cmdline() for p in _group(triton.pid)]
        assert _wait(lambda: not _shm_of(cmdline), 10), _shm_of(cmdline)  # its shared memory went with it
        assert _wait(lambda: not busy_ports("127.0.0.1", (base, base + 1, base + 2, port), 0), 10)
        text = (tmp_path / f"serve-{cycle}.log").read_text()
        if sig != signal.SIGKILL:  # a clean stop: the stubs ended on SIGTERM, none had to be killed
            assert "stubs: stopped" in text or "stubs: already gone" in text, text[-2000:]
            assert "killed after" not in text, text[-2000:]
            triton_log = Path(re.search(r"its log: (\S+\.log)", text).group(1)).read_text(errors="replace")
            for unclean in ("Exit timeout expired", "Non-graceful termination"):
                assert unclean not in triton_log, triton_log[-3000:]
    gw.send_signal(signal.SIGTERM)
    gw.wait(60)
    assert _wait(lambda: not _group(triton.pid), 30)


def test_a_tritonserver_that_dies_takes_the_gateway_down_and_leaves_nothing(tmp_path):
    """tritonserver killed under the gateway (a crash, an OOM kill): its stubs are stopped, its shared memory
    removed, and the gateway exits non-zero naming Triton's log, for its supervisor to restart both. `glotta triton
    run` (the pod's command) stops cleanly on SIGTERM."""
    base, port = free_port_block(3), free_port()
    log = tmp_path / "serve.log"
    gw = subprocess.Popen([sys.executable, "-m", "glotta.cli", "serve", "--engine", "triton", "--model", FR,
                           "--triton-base-port", str(base), "--port", str(port), "--grpc-port", "0"], env=ENV,
                          stdout=log.open("wb"), stderr=subprocess.STDOUT)
    assert _wait(lambda: gw.poll() is None and _ready(f"http://127.0.0.1:{port}"), 180), log.read_text()
    triton = _tritonserver_of(base)
    cmdline = triton.info["cmdline"]
    stubs = [p for p in _group(triton.pid) if p.pid != triton.pid]
    assert stubs and _shm_of(cmdline)
    triton.kill()
    assert gw.wait(60) != 0
    text = log.read_text()
    assert "tritonserver exited with -9 while serving" in text and "Traceback" not in text, text[-2000:]
    assert _wait(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in stubs), 20)
    assert not _shm_of(cmdline) and not busy_ports("127.0.0.1", (base, base + 1, base + 2, port), 5)

    run = subprocess.Popen([sys.executable, "-m", "glotta.cli", "triton", "run", "--model", FR, "--base-port",
                            str(base)], env=ENV, stdout=(tmp_path / "run.log").open("wb"), stderr=subprocess.STDOUT)
    assert _wait(lambda: run.poll() is None and _tritonserver_of(base) is not None and
                 _ready_triton(base), 180), (tmp_path / "run.log").read_text()
    pgid = _tritonserver_of(base).pid
    run.send_signal(signal.SIGTERM)
    assert run.wait(60) == 0
    assert _wait(lambda: not _group(pgid), 30) and not busy_ports("127.0.0.1", (base, base + 1, base + 2), 5)


def _ready_triton(base: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{base}/v2/health/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _shm_of(cmdline: list[str]) -> list[str]:
    """The /dev/shm regions of a launch: named with the prefix its command line gives the Python backend."""
    prefix = re.search(r"shm-region-prefix-name=(\S+)", " ".join(cmdline))
    return [p.name for p in Path("/dev/shm").glob(f"{prefix.group(1)}*")] if prefix else ["no prefix given"]


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/health/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _put(url: str, body: dict) -> int:
    return httpx.put(url + "/api", json=body, timeout=60).status_code


def _outcome(future) -> int | str:
    """A request's status code, or "dropped" when the connection was cut (any other exception fails the test)."""
    try:
        return future.result()
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError):
        return "dropped"


def _put_answer(url: str, body: dict) -> tuple[int, str]:
    r = httpx.put(url + "/api", json=body, timeout=60)
    return r.status_code, "" if r.status_code == 200 else r.json()["message"]


def test_a_port_held_by_another_triton_is_a_start_up_error(tmp_path):
    base = free_port_block(3)
    other = TritonServer(REPO, [FR], base, base + 1, base + 2, workdir=tmp_path / "a").start()
    try:
        with pytest.raises(TritonLaunchError, match=f"port 127.0.0.1:{base} is in use.*--triton-url"):
            TritonServer(REPO, [FR], base, base + 1, base + 2, workdir=tmp_path / "b").start()
        r = subprocess.run([sys.executable, "-m", "glotta.cli", "serve", "--engine", "triton", "--model", FR,
                            "--triton-base-port", str(base), "--port", str(free_port()), "--grpc-port", "0"],
                           env=ENV, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "is in use" in r.stderr and "Traceback" not in r.stderr
        assert other.ready()  # the other server is untouched
        assert other.log_path != TritonServer(REPO, [FR], base + 3, base + 4, base + 5).log_path
    finally:
        other.stop()


def test_stopping_under_load_is_clean_without_sigkill(tmp_path):
    """The root cause of stubs left behind: Triton unloads a decoupled model only once every request has its final
    response, and gives up after --exit-timeout-secs ("Exit timeout expired", then tritonserver and the stub hang).
    Stopped the way Glotta stops it (SIGTERM to the process group) while 64 streams generate, the stub ends them at
    once: every stream gets its final response, tritonserver exits within its timeout, and nothing needs SIGKILL.
    (Measured: without the stub's signal watch this run needs SIGKILL after the 40 s grace.)"""
    base = free_port_block(3)
    server = TritonServer(REPO, [FR], base, base + 1, base + 2, workdir=tmp_path).start()
    finals, started = [], threading.Barrier(65)

    def stream() -> None:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        end = threading.Event()

        def callback(result, error):
            if error is not None or result.as_numpy("finish_reason").reshape(-1)[0]:
                end.set()

        client.start_stream(callback=callback)
        client.async_stream_infer(FR, _inputs("Le", 500, stream=True))
        started.wait()
        finals.append(end.wait(60))
        client.stop_stream()  # as the gateway does once its request is answered

    threads = [threading.Thread(target=stream) for _ in range(64)]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(2)
    pid = server.proc.pid
    how = stop_group(pid, 40, reap=server.proc.poll)
    for t in threads:
        t.join(90)
    assert how == "stopped", how  # ended by SIGTERM alone, within Triton's own exit timeout: no SIGKILL needed
    assert len(finals) == 64 and all(finals), "a stream got no final response"
    assert "Exit timeout expired" not in server.log_path.read_text()
    assert not _group(pid)
    server.stop()


def _inputs(text: str, max_tokens: int, stream: bool = False, rows: int = 1, **extra) -> list:
    values = {"text_input": ([text.encode()] * rows, "BYTES", object), "max_tokens": ([max_tokens], "INT32", np.int32),
              "stream": ([stream], "BOOL", bool)}
    for k, v in extra.items():
        values[k] = ([v], {"temperature": "FP32", "seed": "UINT64"}[k], {"temperature": np.float32,
                                                                         "seed": np.uint64}[k])
    out = []
    for name, (value, dtype, np_type) in values.items():
        arr = np.array(value, dtype=np_type)
        t = grpcclient.InferInput(name, list(arr.shape), dtype)
        t.set_data_from_numpy(arr)
        out.append(t)
    return out


def _ask(url: str, inputs: list) -> tuple[list, Exception | None]:
    """One request over a gRPC stream (the decoupled model's only gRPC path): its responses, or its error."""
    client = grpcclient.InferenceServerClient(url)
    results, errors, end = [], [], threading.Event()

    def callback(result, error):
        if error is not None:
            errors.append(error)
            end.set()
        else:
            results.append(result)
            if result.as_numpy("finish_reason").reshape(-1)[0]:
                end.set()

    client.start_stream(callback=callback)
    try:
        client.async_stream_infer(FR, inputs)
    except Exception as e:  # refused before it reached the model (shape checks)
        errors.append(e)
        end.set()
    end.wait(60)
    client.stop_stream()
    return results, errors[0] if errors else None


def test_one_row_per_request_and_the_gateways_validation(triton):
    results, error = _ask(triton.grpc_url, _inputs("Le noyau", 3))
    assert error is None and results[-1].as_numpy("finish_reason").reshape(-1)[0] in (b"length", b"eod")
    _, error = _ask(triton.grpc_url, _inputs("Le noyau", 3, rows=2))  # two rows: the config says one
    assert error is not None and "shape" in str(error)
    for extra, request in [
        ({"max_tokens": -5}, GenerationRequest("Le", -5)),
        ({"temperature": math.nan}, GenerationRequest("Le", 3, SamplingParams(temperature=math.nan))),
    ]:
        with pytest.raises(GlottaError) as expected:
            check_request(request)
        _, error = _ask(triton.grpc_url, _inputs("Le", extra.pop("max_tokens", 3), **extra))
        # the same check as the gateway's, in the names of the tensors this client sent (never `max_new_tokens`)
        assert error is not None and triton_message(expected.value) in str(error)
        assert "max_new_tokens" not in str(error)


def test_seeds_are_unsigned_64_bit_through_triton(triton_gateway):
    with httpx.Client(base_url=triton_gateway.url, timeout=60) as http:
        r = http.put("/api", json={"prompts": ["Le"], "tokens_to_generate": 2, "random_seed": 2**64 + 5})
        assert r.status_code == 400 and r.json()["param"] == "random_seed"
        for seed in (2**64 - 1, 2**63 + 7):
            r = http.put("/api", json={"prompts": ["Le", "La"], "tokens_to_generate": 3, "random_seed": seed})
            assert r.status_code == 200, r.text
        r = http.post("/v1/completions", json={"prompt": "Le", "max_tokens": 2, "seed": 2**64})
        assert r.status_code == 400 and r.json()["error"]["param"] == "seed"
        a = http.post("/v1/completions", json={"prompt": "Le", "max_tokens": 5, "seed": 2**64 - 1}).json()
        b = http.post("/v1/completions", json={"prompt": "Le", "max_tokens": 5, "seed": 2**64 - 1}).json()
        assert a["choices"][0]["text"] == b["choices"][0]["text"]


def test_two_replicas_fail_over_and_rejoin(tmp_path):
    """Two real tritonservers on 127.0.0.1 and 127.0.0.2, same ports; one is killed mid-load: only requests it held
    fail (503 with the reason), new requests go to the other, and it takes traffic again once restarted."""
    base = free_port_block(3)
    replicas = [TritonServer(REPO, [FR], base, base + 1, base + 2, workdir=tmp_path / host, host=host)
                for host in ("127.0.0.1", "127.0.0.2")]
    for r in replicas:
        r.start()
    gw = Gateway(["--model", FR, *(a for r in replicas for a in ("--triton-url", r.grpc_url))],
                 tmp_path / "serve.log", env={"GLOTTA_MODEL_REPOSITORY": str(REPO)})
    body = {"prompts": ["Le noyau"], "tokens_to_generate": 24, "top_k": 1}
    try:
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: _put(gw.url, body), range(16)))
            assert statuses == [200] * 16
            assert all(_served(r) > 0 for r in replicas), "round-robin should reach both replicas"
            futures = [pool.submit(_put_answer, gw.url, body) for _ in range(16)]
            time.sleep(0.5)
            in_flight = sum(not f.done() for f in futures)  # on both replicas together
            os.killpg(replicas[1].proc.pid, signal.SIGKILL)
            answers = [f.result() for f in futures]
        failed = [a for a in answers if a[0] != 200]
        assert all(code == 503 and "Triton" in message for code, message in failed), failed
        # requests not yet started (the pool holds 8) or held by the survivor answer; only the killed one's fail
        assert len(failed) <= in_flight and len(failed) < len(answers), (len(failed), in_flight)
        assert [_put(gw.url, body) for _ in range(8)] == [200] * 8  # all to the survivor
        replicas[1].proc.wait()
        replicas[1].start()
        before = _served(replicas[1])
        assert _wait(lambda: _put(gw.url, body) == 200 and _served(replicas[1]) > before, 60), "no rejoin"
        # no claim of gRPC health checking Triton does not serve (it would log "Watch UNIMPLEMENTED")
        assert "UNIMPLEMENTED" not in gw.log_text() and "health check" not in gw.log_text()
    finally:
        gw.stop()
        for r in replicas:
            r.stop()


def _metric(server: TritonServer, name: str) -> float:
    try:
        text = httpx.get(f"http://{server.host}:{server.metrics_port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def _served(server: TritonServer) -> float:
    return _metric(server, "nv_inference_request_success")
