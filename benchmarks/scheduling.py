"""Fair scheduling and prefix reuse, measured on real `glotta serve` gateways (the shipped French model):

1. Mixed load: while one `/api` request of 128 prompts × 300 tokens runs, short requests (5 tokens) are sent one
   after another; their time to first token (streamed) and end-to-end latency, p50 / p95.
2. Template runs: `sentiment-fr`, k = 4, score mode, 10 inputs, one after another: latency with and without the
   prefix cache, the cached share of prompt tokens (from /metrics), and whether the answers are identical.

    python benchmarks/scheduling.py [--baseline-rev REV] [--shorts 10]

`--baseline-rev` also runs the mixed load against the engine of an earlier commit (a git worktree of REV, put first
on PYTHONPATH), e.g. the commit before fair scheduling; otherwise the baseline is today's engine with the policy
turned off (`--max-rows-per-request 64 --prefill-chunk 4096`). Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from glotta.clients.local_gateway import LocalGateway

ROOT = Path(__file__).resolve().parents[1]
MODEL = "glotta-fr-tiny"
console = Console(width=160)
REVIEWS = ["Un logiciel remarquable, je le recommande.", "Le pilote plante sans arrêt.", "Installation simple.",
           "Une documentation claire et complète.", "Rien ne fonctionne après la mise à jour.",
           "Très rapide et stable.", "Le support n'a jamais répondu.", "Une interface agréable.",
           "Des erreurs à chaque démarrage.", "Exactement ce qu'il me fallait."]


def baseline_env(rev: str, work: Path) -> dict:
    """PYTHONPATH that makes `glotta` the package of commit `rev` (a worktree, its folders mapped as in pyproject)."""
    tree = work / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True,
                   capture_output=True)
    pkg = work / "pkg" / "glotta"
    pkg.mkdir(parents=True)
    for name in ("core", "cli", "server", "clients", "export", "training", "loadtests"):
        if (tree / name).is_dir():
            (pkg / name).symlink_to(tree / name)
    return {"PYTHONPATH": str(work / "pkg"), "GLOTTA_MODEL_REPOSITORY": str(ROOT / "model_repository")}


def mixed_load(gw: LocalGateway, shorts: int) -> dict:
    """Short requests while a maximal one runs: TTFT and end-to-end seconds of each short one."""
    giant = {"prompts": [f"Le paquet numéro {i}" for i in range(128)], "tokens_to_generate": 300, "top_k": 1}
    result: dict = {}

    def run_giant() -> None:
        t = time.perf_counter()
        r = httpx.put(gw.url + "/api", json=giant, timeout=900)
        result["giant_s"], result["giant_status"] = time.perf_counter() - t, r.status_code

    thread = threading.Thread(target=run_giant)
    thread.start()
    time.sleep(1.0)  # the giant holds its rows
    ttft, e2e = [], []
    with httpx.Client(base_url=gw.url, timeout=900) as http:
        for i in range(shorts):
            body = {"prompt": f"La version {i}", "max_tokens": 5, "temperature": 0, "stream": True}
            t = time.perf_counter()
            first = None
            with http.stream("POST", "/v1/completions", json=body) as resp:
                for line in resp.iter_lines():
                    if line.startswith("data:") and first is None:
                        first = time.perf_counter() - t
            ttft.append(first)
            e2e.append(time.perf_counter() - t)
    result["giant_running_when_done"] = thread.is_alive()
    thread.join()
    return {"ttft": ttft, "e2e": e2e, **result}


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def template_runs(gw: LocalGateway, repeats: int) -> dict:
    before = {n: metric(gw.url, n) for n in ("glotta_prompt_tokens_total", "glotta_prompt_tokens_cached_total")}
    latencies, answers = [], []
    with httpx.Client(base_url=gw.url, timeout=300) as http:
        for _ in range(repeats):
            for text in REVIEWS:
                t = time.perf_counter()
                r = http.post("/v1/templates/sentiment-fr/run",
                              json={"inputs": {"text": text}, "k": 4, "mode": "score"}).json()
                latencies.append(time.perf_counter() - t)
                answers.append((r.get("label"), {k: round(v, 4) for k, v in (r.get("scores") or {}).items()}))
    prompt = metric(gw.url, "glotta_prompt_tokens_total") - before["glotta_prompt_tokens_total"]
    cached = metric(gw.url, "glotta_prompt_tokens_cached_total") - before["glotta_prompt_tokens_cached_total"]
    return {"latency": latencies, "answers": answers, "cached_share": cached / max(prompt, 1)}


def pct(xs: list[float], q: float) -> str:
    return f"{np.percentile(np.array(xs) * 1000, q):.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-rev", help="also measure the mixed load on this commit's engine")
    ap.add_argument("--shorts", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2, help="passes over the 10 template inputs")
    ap.add_argument("--output", type=Path, default=ROOT / "bench-results" / "scheduling.json")
    a = ap.parse_args()
    base = ["--model", MODEL, "--log-level", "warning"]
    configs = {"fair (default)": ([], {}), "policy off": (["--max-rows-per-request", "64", "--prefill-chunk", "4096",
                                                           "--no-prefix-cache"], {})}
    work = Path(tempfile.mkdtemp(prefix="glotta-bench-"))
    if a.baseline_rev:
        configs[f"commit {a.baseline_rev[:10]}"] = ([], baseline_env(a.baseline_rev, work))
    mixed = {}
    for label, (extra, env) in configs.items():
        with console.status(f"mixed load: {label}"):
            gw = LocalGateway([*base, *extra], env=env)
            try:
                mixed[label] = mixed_load(gw, a.shorts)
            finally:
                gw.stop()
    t = Table(title="Short requests (5 tokens) while /api runs 128 prompts × 300 tokens")
    for col in ("engine", "TTFT p50 ms", "TTFT p95 ms", "e2e p50 ms", "e2e p95 ms", "max e2e ms", "giant s"):
        t.add_column(col, justify="right")
    for label, m in mixed.items():
        t.add_row(label, pct(m["ttft"], 50), pct(m["ttft"], 95), pct(m["e2e"], 50), pct(m["e2e"], 95),
                  f"{max(m['e2e']) * 1000:.0f}", f"{m['giant_s']:.1f}")
    console.print(t)

    runs = {}
    for label, extra in (("prefix cache", []), ("--no-prefix-cache", ["--no-prefix-cache"])):
        with console.status(f"template runs: {label}"):
            gw = LocalGateway([*base, *extra])
            try:
                template_runs(gw, 1)  # warm-up pass (fills the cache the way a running server has it)
                runs[label] = template_runs(gw, a.repeats)
            finally:
                gw.stop()
    t = Table(title=f"sentiment-fr, k = 4, score mode, {len(REVIEWS)} inputs × {a.repeats} (after a warm-up pass)")
    for col in ("server", "latency p50 ms", "latency p95 ms", "cached prompt tokens", "speed-up (p50)"):
        t.add_column(col, justify="right")
    off = statistics.median(runs["--no-prefix-cache"]["latency"])
    for label, r in runs.items():
        t.add_row(label, pct(r["latency"], 50), pct(r["latency"], 95), f"{r['cached_share']:.0%}",
                  f"{off / statistics.median(r['latency']):.2f}×")
    console.print(t)
    same = runs["prefix cache"]["answers"] == runs["--no-prefix-cache"]["answers"]
    console.print(f"answers and label scores (4 decimals) identical with and without the cache: {same}")
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps({"mixed": mixed, "templates": runs}, indent=1))
    console.print(f"raw figures: {a.output}")
    if a.baseline_rev:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work / "tree")], check=False)


if __name__ == "__main__":
    main()
