"""Ownership under faults (not part of the test suite): N cycles of start → load → signal to the gateway.

    python benchmarks/fault_cycles.py [--cycles 10] [--clients 48]

Each cycle starts `glotta serve --engine triton` on the same ports, sends `--clients` concurrent /api requests, and
after 1.5 s sends the gateway SIGTERM, SIGINT or SIGKILL in turn. Then, within 30 s, nothing of that run may be left:
no process of tritonserver's group (stubs included), no /dev/shm region named with its prefix, no port held (the
gateway's and Triton's three), and for the signals a handler sees, Triton's log without "Exit timeout expired" or
"Non-graceful termination". Prints one row per cycle; exits 1 if any cycle left anything.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

from glotta.core.net import free_port, free_port_block
from glotta.server.triton.launcher import busy_ports

ROOT = Path(__file__).resolve().parents[1]
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGKILL)


def until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return bool(predicate())


def ready(url: str) -> bool:
    try:
        return httpx.get(url + "/health/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def group(pgid: int) -> list[int]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                out.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return out


def put(url: str) -> str:
    try:
        body = {"prompts": ["Le noyau Linux"], "tokens_to_generate": 400, "top_k": 1}
        return str(httpx.put(url + "/api", json=body, timeout=60).status_code)
    except httpx.HTTPError:
        return "dropped"


def cycle(i: int, sig: signal.Signals, clients: int, base: int, port: int, logs: Path) -> dict:
    env = {**os.environ, "GLOTTA_MODEL_REPOSITORY": str(ROOT / "model_repository")}
    log = logs / f"serve-{i}.log"
    gw = subprocess.Popen([sys.executable, "-m", "glotta.cli", "serve", "--engine", "triton", "--model",
                           "glotta-fr-tiny", "--triton-base-port", str(base), "--port", str(port), "--grpc-port", "0"],
                          env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    if not until(lambda: gw.poll() is None and ready(url), 180):
        gw.kill()
        return {"cycle": i, "signal": sig.name, "error": "not ready: " + log.read_text()[-500:]}
    triton = next(p for p in psutil.process_iter(["cmdline"])
                  if p.info["cmdline"] and f"--http-port={base}" in p.info["cmdline"])
    prefix = re.search(r"shm-region-prefix-name=(\S+)", " ".join(triton.info["cmdline"])).group(1)
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(put, url) for _ in range(clients)]
        time.sleep(1.5)
        gw.send_signal(sig)
        outcomes = [f.result() for f in futures]
    gw.wait(90)
    processes_gone = until(lambda: not group(triton.pid), 30)
    shm_gone = until(lambda: not list(Path("/dev/shm").glob(f"{prefix}*")), 10)
    busy = busy_ports("127.0.0.1", (base, base + 1, base + 2, port), 10)
    text = log.read_text(errors="replace")
    m = re.search(r"its log: (\S+\.log)", text)
    triton_log = Path(m.group(1)).read_text(errors="replace") if m else ""
    unclean = [w for w in ("Exit timeout expired", "Non-graceful termination") if w in triton_log]
    return {"cycle": i, "signal": sig.name, "exit": gw.returncode, "processes left": len(group(triton.pid)),
            "shm left": len(list(Path("/dev/shm").glob(f"{prefix}*"))), "ports held": busy,
            "unclean": unclean if sig != signal.SIGKILL else [],
            "ok": processes_gone and shm_gone and not busy and (sig == signal.SIGKILL or not unclean),
            "answers": {o: outcomes.count(o) for o in sorted(set(outcomes))}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--clients", type=int, default=48)
    a = ap.parse_args()
    base, port = free_port_block(3), free_port()
    logs = Path(tempfile.mkdtemp(prefix="glotta-faults-"))
    rows = []
    for i in range(a.cycles):
        row = cycle(i, SIGNALS[i % 3], a.clients, base, port, logs)
        rows.append(row)
        print(row, flush=True)
    bad = [r for r in rows if not r.get("ok")]
    print(f"{a.cycles - len(bad)}/{a.cycles} cycles left nothing behind (logs in {logs})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
