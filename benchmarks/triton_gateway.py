"""Gateway → Triton vs the embedded engine, in one run on a shipped model:

1. aggregate output tokens/s for 16 concurrent HTTP clients (`/v1/completions`), gateway with the embedded ONNX engine
   vs gateway forwarding to a real `tritonserver` running the same engine in its Python backend (target ≥ 0.85×);
2. the latency a request pays in the gateway on top of calling Triton directly (gRPC stream with the same tensors
   and outputs the gateway asks for): p50 of gateway REST minus p50 of direct Triton, short generations
   (target ≤ 2 ms).

    python benchmarks/triton_gateway.py [--model glotta-fr-tiny] [--repeats 3]

The two set-ups run one after the other, never side by side, so they do not share the 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import statistics
import time
import uuid
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as grpcclient
from rich.console import Console
from rich.table import Table
from serving_spine import PROMPTS, http_aggregate

from glotta.clients.local_gateway import LocalGateway
from glotta.server.triton.launcher import TritonServer

ROOT = Path(__file__).resolve().parents[1]
console = Console()


async def direct_triton_latency(url: str, model: str, n: int, max_tokens: int) -> list[float]:
    """The same tensors and requested outputs as the gateway's TritonEngine sends for a non-streaming request."""
    client = grpcclient.InferenceServerClient(url)
    outputs = [grpcclient.InferRequestedOutput(o) for o in ("text_output", "output_ids", "prompt_ids",
                                                            "finish_reason")]
    out = []
    for i in range(n):
        tensors = []
        for name, value, dtype in [("text_input", np.array([PROMPTS[i % 8].encode()], object), "BYTES"),
                                   ("max_tokens", np.array([max_tokens], np.int32), "INT32"),
                                   ("temperature", np.array([0.0], np.float32), "FP32"),
                                   ("top_k", np.array([1], np.int32), "INT32"),
                                   ("exclude_input_in_output", np.array([True]), "BOOL")]:
            t = grpcclient.InferInput(name, list(value.shape), dtype)
            t.set_data_from_numpy(value)
            tensors.append(t)
        done = asyncio.Event()

        async def requests():
            yield {"model_name": model, "inputs": tensors, "outputs": outputs, "request_id": uuid.uuid4().hex}
            await done.wait()

        t0 = time.perf_counter()
        stream = client.stream_infer(requests())
        async for result, error in stream:
            assert error is None, error
            if result.as_numpy("finish_reason").reshape(-1)[0]:
                break
        out.append(time.perf_counter() - t0)
        done.set()
        stream.cancel()
    await client.close()
    return out


def gateway_latency(url: str, model: str, n: int, max_tokens: int) -> list[float]:
    """REST round trips over one keep-alive connection with the standard library's client: httpx alone adds about
    0.4 ms per call here, which would be charged to the gateway."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    out = []
    for i in range(n):
        body = json.dumps({"model": model, "prompt": PROMPTS[i % 8], "max_tokens": max_tokens, "temperature": 0})
        t0 = time.perf_counter()
        conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        out.append(time.perf_counter() - t0)
        assert resp.status == 200, resp.status
    conn.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="glotta-fr-tiny")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--latency-requests", type=int, default=200)
    ap.add_argument("--latency-tokens", type=int, default=4)
    ap.add_argument("--port", type=int, default=5078)
    a = ap.parse_args()
    url = f"http://127.0.0.1:{a.port}"

    embedded: list[float] = []
    gateway = LocalGateway(["--model", a.model, "--log-level", "warning"], port=a.port)
    try:
        asyncio.run(http_aggregate(url, a.model, 4, 1, 16))
        with console.status("embedded engine, 16 clients"):
            for _ in range(a.repeats):
                embedded.append(asyncio.run(http_aggregate(url, a.model, 16, 3, a.new_tokens)))
    finally:
        gateway.stop()

    triton = TritonServer(ROOT / "model_repository", [a.model], 8400, 8401, 8402,
                          workdir=ROOT / "bench-results" / "triton").start()
    via: list[float] = []
    direct_ms: list[float] = []
    gateway_ms: list[float] = []
    try:
        gateway = LocalGateway(["--model", a.model, "--log-level", "warning", "--triton-url", triton.grpc_url],
                               port=a.port)
        try:
            asyncio.run(http_aggregate(url, a.model, 4, 1, 16))
            with console.status("gateway → Triton, 16 clients"):
                for _ in range(a.repeats):
                    via.append(asyncio.run(http_aggregate(url, a.model, 16, 3, a.new_tokens)))
            with console.status("added latency: direct Triton vs gateway → Triton"):
                for _ in range(4):  # interleaved blocks, so drift hits both sides alike
                    n = a.latency_requests // 4
                    direct_ms += [x * 1e3 for x in asyncio.run(
                        direct_triton_latency(triton.grpc_url, a.model, n, a.latency_tokens))]
                    gateway_ms += [x * 1e3 for x in gateway_latency(url, a.model, n, a.latency_tokens)]
        finally:
            gateway.stop()
    finally:
        triton.stop()
    failover = failover_run(a)

    t = Table(title=f"{a.model}: 16 clients × {a.new_tokens} tokens, aggregate output tokens/s (median of {a.repeats})")
    for col in ("embedded engine", "gateway → Triton", "ratio (target ≥ 0.85)"):
        t.add_column(col, justify="right")
    e, v = statistics.median(embedded), statistics.median(via)
    t.add_row(f"{e:.0f}", f"{v:.0f}", f"{v / e:.2f}×")
    console.print(t)
    t2 = Table(title=f"latency of a {a.latency_tokens}-token greedy request, {len(direct_ms)} each (ms)")
    for col in ("", "p50", "p90", "p99"):
        t2.add_column(col, justify="right")
    for label, xs in (("Triton direct (gRPC stream)", direct_ms), ("gateway REST → Triton", gateway_ms)):
        t2.add_row(label, *(f"{np.percentile(xs, q):.2f}" for q in (50, 90, 99)))
    t2.add_row("added by the gateway (target ≤ 2)", f"{np.median(gateway_ms) - np.median(direct_ms):.2f}", "", "")
    console.print(t2)
    t3 = Table(title="failover: two replicas (127.0.0.1, 127.0.0.2), one SIGKILLed mid-load")
    for col in ("requests", "in flight at the kill (both replicas)", "failed (503)", "requests after the kill",
                "failed after"):
        t3.add_column(col, justify="right")
    t3.add_row(*(str(failover[k]) for k in ("requests", "in_flight", "failed", "after", "failed_after")))
    console.print(t3)


def failover_run(a: argparse.Namespace) -> dict:
    """16 clients over two replicas (round-robin: about half the requests in flight sit on each); replica 2 is
    killed (its whole process group) once load is steady. Only what it held may fail."""
    import os
    import signal
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    replicas = [TritonServer(ROOT / "model_repository", [a.model], 8400, 8401, 8402, host=host,
                             workdir=ROOT / "bench-results" / f"triton-{host}") for host in ("127.0.0.1", "127.0.0.2")]
    for r in replicas:
        r.start()
    gateway = LocalGateway(["--model", a.model, "--log-level", "warning",
                            *(x for r in replicas for x in ("--triton-url", r.grpc_url))], port=a.port)
    body = {"prompts": ["Le noyau Linux"], "tokens_to_generate": 64, "top_k": 1}

    def put(_) -> int:
        return httpx.put(gateway.url + "/api", json=body, timeout=60).status_code

    def held() -> int:
        text = httpx.get("http://127.0.0.2:8402/metrics", timeout=5).text
        return int(sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines()
                       if x.startswith(("glotta_engine_running{", "glotta_engine_waiting{"))))

    try:
        with ThreadPoolExecutor(16) as pool:
            first = [pool.submit(put, i) for i in range(96)]
            time.sleep(2.0)
            in_flight = sum(not f.done() and f.running() for f in first)
            os.killpg(replicas[1].proc.pid, signal.SIGKILL)
            codes = [f.result() for f in first]
            after = list(pool.map(put, range(48)))
    finally:
        gateway.stop()
        for r in replicas:
            r.stop()
    return {"requests": len(codes), "failed": sum(c != 200 for c in codes), "in_flight": in_flight,
            "after": len(after), "failed_after": sum(c != 200 for c in after)}


if __name__ == "__main__":
    main()
