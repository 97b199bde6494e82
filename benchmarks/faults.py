"""Fault run (not part of the test suite): load on the gateway while Triton and its engine worker are killed.

    python benchmarks/faults.py [--seconds 45] [--clients 8]

Timeline: load starts; at 25 % of the run the Python-backend stub (the engine worker inside Triton) is killed with
SIGKILL; at 45 % tritonserver itself is killed; at 60 % it is started again; the load goes on to the end. Every
request has a 30 s client timeout, so a hang is counted, never waited for. Prints requests sent, succeeded, failed
with a clean error (a JSON error body with 503/504/429/4xx), other 5xx, hung, and whether the last seconds succeeded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from glotta.server.triton.launcher import TritonServer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from serving_spine import PROMPTS  # noqa: E402

from glotta.clients.local_gateway import LocalGateway  # noqa: E402


async def client(url: str, stop_at: float, tally: Counter, late: Counter, recover_from: float) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        i = 0
        while time.monotonic() < stop_at:
            i += 1
            body = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": 32, "temperature": 0}
            tally["sent"] += 1
            try:
                r = await http.post("/v1/completions", json=body)
            except httpx.TimeoutException:
                tally["hung"] += 1
                continue
            except httpx.TransportError:
                tally["connection error"] += 1
                await asyncio.sleep(0.05)
                continue
            if r.status_code == 200:
                tally["succeeded"] += 1
                if time.monotonic() > recover_from:
                    late["succeeded"] += 1
            elif r.headers.get("content-type", "").startswith("application/json") and "error" in r.json():
                tally[f"clean error {r.status_code}"] += 1
                if r.status_code >= 500 and r.status_code != 503 and r.status_code != 504:
                    tally["5xx other than 503/504"] += 1
                await asyncio.sleep(0.05)
            else:
                tally[f"unclean {r.status_code}"] += 1
            if time.monotonic() > recover_from and r.status_code != 200:
                late["failed"] += 1


def stub_pids(server_pid: int) -> list[int]:
    """The Python-backend stubs of our tritonserver only (its child processes)."""
    out = subprocess.run(["pgrep", "-P", str(server_pid), "-f", "triton_python_backend_stub"], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


async def run(a: argparse.Namespace) -> None:
    triton = TritonServer(ROOT / "model_repository", [a.model], 8600, 8601, 8602,
                          workdir=ROOT / "bench-results" / "faults").start()
    gw = LocalGateway(["--model", a.model, "--log-level", "warning", "--triton-url", triton.grpc_url], port=a.port)
    url = gw.url
    tally: Counter = Counter()
    late: Counter = Counter()
    t0 = time.monotonic()
    stop_at = t0 + a.seconds
    events = []
    try:
        load = [asyncio.create_task(client(url, stop_at, tally, late, t0 + 0.85 * a.seconds))
                for _ in range(a.clients)]
        await asyncio.sleep(0.25 * a.seconds)
        pids = stub_pids(triton.proc.pid)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        events.append(f"{time.monotonic() - t0:5.1f}s killed {len(pids)} Python-backend stub(s)")
        await asyncio.sleep(0.2 * a.seconds)
        triton.proc.kill()
        triton.proc.wait()
        events.append(f"{time.monotonic() - t0:5.1f}s killed tritonserver")
        await asyncio.sleep(0.15 * a.seconds)
        await asyncio.to_thread(triton.start)
        events.append(f"{time.monotonic() - t0:5.1f}s tritonserver ready again")
        await asyncio.gather(*load)
    finally:
        gw.stop()
        triton.stop()
    for e in events:
        print(e)
    print(f"requests sent {tally['sent']}, succeeded {tally['succeeded']}, "
          f"failed with a clean error {sum(v for k, v in tally.items() if k.startswith('clean error'))} "
          f"({', '.join(f'{k.split()[-1]}: {v}' for k, v in sorted(tally.items()) if k.startswith('clean error'))}), "
          f"connection errors {tally['connection error']}, hung {tally['hung']}, "
          f"5xx other than 503/504 {tally['5xx other than 503/504']}, unclean {sum(v for k, v in tally.items() if k.startswith('unclean'))}")
    print(f"last 15 % of the run: {late['succeeded']} succeeded, {late['failed']} failed → "
          f"{'recovered' if late['succeeded'] and not late['failed'] else 'NOT recovered'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="glotta-fr-tiny")
    ap.add_argument("--seconds", type=float, default=45)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--port", type=int, default=5079)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
