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
from serving_spine import PROMPTS, http_aggregate, start_gateway

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
        for name, value, dtype in [("text_input", np.array([[PROMPTS[i % 8].encode()]], object), "BYTES"),
                                   ("max_tokens", np.array([[max_tokens]], np.int32), "INT32"),
                                   ("temperature", np.array([[0.0]], np.float32), "FP32"),
                                   ("top_k", np.array([[1]], np.int32), "INT32"),
                                   ("exclude_input_in_output", np.array([[True]]), "BOOL")]:
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
    proc = start_gateway(a.model, a.port, [])
    try:
        asyncio.run(http_aggregate(url, a.model, 4, 1, 16))
        with console.status("embedded engine, 16 clients"):
            for _ in range(a.repeats):
                embedded.append(asyncio.run(http_aggregate(url, a.model, 16, 3, a.new_tokens)))
    finally:
        proc.terminate()
        proc.wait()

    triton = TritonServer(ROOT / "model_repository", [a.model], 8400, 8401, 8402,
                          workdir=ROOT / "bench-results" / "triton").start()
    via: list[float] = []
    direct_ms: list[float] = []
    gateway_ms: list[float] = []
    try:
        proc = start_gateway(a.model, a.port, ["--triton-url", triton.grpc_url])
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
            proc.terminate()
            proc.wait()
    finally:
        triton.stop()

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


if __name__ == "__main__":
    main()
