"""Hostile load (not part of the test suite): legitimate Locust traffic on a keyed gateway, alone and then while an
attacker sends every abuse docs/security.md bounds — in one run, so the two latencies compare.

    python benchmarks/hostile_load.py [--seconds 30] [--users 8] [--scenario completions]

The attacker (threads in this process, bounded in count and time, loopback only) cycles through: half-sent headers
held open (slowloris, up to --slowloris connections), 1.5 MB prompts, 200,000 template example indices, 129-prompt
requests, 17 stop strings, `text/plain` bodies (a cross-site simple request), wrong keys, lone surrogates, 70 KB of
headers, bodies that never arrive, and connections beyond --max-connections. Prints the legitimate users' requests/s,
p50/p99 and failures with and without the attacker, and what the attacker got back.
"""

from __future__ import annotations

import argparse
import csv
import json
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from glotta.clients.local_gateway import LocalGateway
from glotta.loadtests.run import Target, run_level

KEY = "bench-key"
BIG = "Le chat dort. " * 110_000


def _abuse(url: str, port: int, stop_at: float, tally: Counter, slowloris: int) -> None:
    held: list[socket.socket] = []
    auth = {"Authorization": f"Bearer {KEY}"}
    plain = {**auth, "Content-Type": "text/plain"}
    js = {**auth, "Content-Type": "application/json"}

    def body(obj) -> bytes:  # encoded once: the attacker's own CPU is not what is measured
        return json.dumps(obj).encode()

    calls = [
        ("POST", "/v1/completions", {"content": body({"prompt": BIG, "max_tokens": 1}), "headers": js}),
        ("POST", "/v1/templates/sentiment-fr/run",
         {"content": body({"inputs": {"text": "x"}, "examples": [0] * 200_000}), "headers": js}),
        ("POST", "/v1/completions", {"content": body({"prompt": ["Le"] * 129}), "headers": js}),
        ("POST", "/v1/completions", {"content": body({"prompt": "Le", "stop": ["x"] * 17}), "headers": js}),
        ("POST", "/v1/completions", {"content": b'{"prompt": "Le", "max_tokens": 64}', "headers": plain}),
        ("POST", "/v1/completions", {"content": b'{"prompt": "Le", "max_tokens": 64}',
                                     "headers": {"Authorization": "x"}}),
        ("POST", "/v1/completions", {"content": b'{"prompt": "\\ud800"}', "headers": js}),
    ]
    stall = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
             "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{").encode()
    with httpx.Client(base_url=url, timeout=30) as c:
        i = 0
        while time.monotonic() < stop_at:
            method, path, kw = calls[i % len(calls)]
            i += 1
            try:
                tally[f"{path} → {c.request(method, path, **kw).status_code}"] += 1
            except httpx.HTTPError as e:
                tally[f"{path} → {type(e).__name__}"] += 1
            held = [s for s in held if s.fileno() != -1]
            while len(held) < slowloris and time.monotonic() < stop_at:  # half-sent headers or bodies, held open
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=1)
                    s.sendall(stall if len(held) % 2 else b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
                    held.append(s)
                    tally["held open (half-sent headers or body)"] += 1
                except OSError:
                    tally["held open: connection refused"] += 1
                    break
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 70_000 + b"\r\n")
                    tally[f"70 KB of headers → {s.recv(64).split(b' ')[1:2] or b'closed'}"] += 1
            except OSError as e:
                tally[f"70 KB of headers → {type(e).__name__}"] += 1
            # the server closes held sockets at its header / body timeout: count them and open new ones
            for s in list(held):
                try:
                    s.setblocking(False)
                    s.recv(65536)  # readable: the server answered (408) or closed; either way it let go
                    s.close()
                except BlockingIOError:
                    pass
                except OSError:
                    s.close()
    for s in held:
        s.close()


def _stats(out: Path, csv_prefix: str) -> dict:
    with open(out / f"{csv_prefix}_stats.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    return {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
            "rps": float(row["Requests/s"]), "p50": float(row["50%"]), "p99": float(row["99%"])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--scenario", default="completions", choices=["api", "completions", "stream", "templates"])
    ap.add_argument("--slowloris", type=int, default=200, help="half-open connections the attacker holds")
    ap.add_argument("--output", type=Path, default=Path("bench-results/hostile"))
    a = ap.parse_args()
    a.output.mkdir(parents=True, exist_ok=True)
    gw = LocalGateway(["--model", "glotta-fr-tiny", "--api-key", KEY, "--log-level", "warning",
                       "--header-timeout", "5", "--max-connections", "512"], a.output / "server.log")
    target = Target("glotta", gw.url, gw)
    results, attacks = {}, Counter()
    try:
        import os
        os.environ["GLOTTA_API_KEY"] = KEY
        models = {"fr": "glotta-fr-tiny"}
        run_level(Target("warmup", gw.url), a.scenario, a.users, "5s", a.output, 10**6, models)
        for label in ("alone", "with attacker"):
            target.label = label.replace(" ", "-")
            attacker = None
            if label == "with attacker":
                stop_at = time.monotonic() + a.seconds
                attacker = threading.Thread(target=_abuse, args=(gw.url, gw.port, stop_at, attacks, a.slowloris))
                attacker.start()
            level = run_level(target, a.scenario, a.users, f"{a.seconds}s", a.output, 10**6, models)
            if attacker is not None:
                attacker.join(a.seconds + 60)
            results[label] = _stats(a.output, level["csv"])
    finally:
        gw.stop()
    print(f"\nlegitimate traffic: Locust {a.scenario}, {a.users} users, {a.seconds} s each, same gateway, same run")
    print("| run | requests | failures | req/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|")
    for label, r in results.items():
        print(f"| {label} | {r['requests']} | {r['failures']} | {r['rps']:.1f} | {r['p50']:.0f} | {r['p99']:.0f} |")
    alone, hit = results["alone"], results["with attacker"]
    print(f"\nratios with / without the attacker: p50 {hit['p50'] / max(alone['p50'], 1):.2f}×, "
          f"p99 {hit['p99'] / max(alone['p99'], 1):.2f}×, req/s {hit['rps'] / max(alone['rps'], 1e-9):.2f}×")
    print("\nattacker's requests and what they got:")
    for k, v in sorted(attacks.items()):
        print(f"  {v:6d}  {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
