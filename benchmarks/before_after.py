"""The same serving measurement on two commits, in one run: did a change (a refactor, a move) cost throughput?

    python benchmarks/before_after.py --before f1c3299 [--repeats 5] [--new-tokens 64] [--clients 1,16]

The `--before` commit is unpacked into a temporary folder (`git archive`) and imported from there through a
`glotta` package of symlinks; the working tree is the "after". Each repeat starts `glotta serve` from one tree, then
from the other, on that tree's own demo model, and sends greedy /v1/completions (`ignore_eos`, the same prompts) from
1 and 16 concurrent clients; the order alternates between repeats. Prints tokens/s medians and the after / before
ratio; machines here vary several-fold between days, so only the ratio of one run means anything.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from glotta.clients.local_gateway import LocalGateway
from glotta.core.sample_texts import sample_prompts

ROOT = Path(__file__).resolve().parents[1]
console = Console()


def unpack(rev: str, into: Path) -> Path:
    """The commit's tree, and a folder whose `glotta` package is that tree (each top-level package a symlink)."""
    tree = into / "tree"
    tree.mkdir()
    archive = into / "tree.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), rev], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    shim = into / "shim" / "glotta"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("")
    for package in tree.iterdir():
        if (package / "__init__.py").is_file():
            (shim / package.name).symlink_to(package)
    return tree


async def throughput(url: str, clients: int, n: int, prompts: list[str]) -> float:
    """Generated tokens per second, `clients` requests at a time, for rounds that generate ≥ 4096 tokens."""
    async with httpx.AsyncClient(timeout=300) as http:
        async def one(p: str) -> int:
            r = await http.post(url + "/v1/completions", json={"prompt": p, "max_tokens": n, "temperature": 0,
                                                                "ignore_eos": True})
            r.raise_for_status()
            return r.json()["usage"]["completion_tokens"]

        await one(prompts[0])  # warm-up: graphs, first allocations
        t0 = time.perf_counter()
        tokens = 0
        for round_ in range(max(3, -(-4096 // (clients * n)))):
            batch = [prompts[(round_ * clients + i) % len(prompts)] for i in range(clients)]
            tokens += sum(await asyncio.gather(*(one(p) for p in batch)))
        return tokens / (time.perf_counter() - t0)


def measure(tree: Path | None, model: str, threads: int, clients: list[int], n: int, prompts: list[str]) -> dict:
    repo = (tree or ROOT) / "model_repository"
    env = {"PYTHONPATH": str(tree.parent / "shim")} if tree else {}
    where = subprocess.run([sys.executable, "-c", "import glotta.server; print(glotta.server.__path__[0])"],
                           env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).resolve().is_relative_to((tree or ROOT).resolve()), f"glotta imported from {where}"
    args = ["--model", str(repo / model), "--threads", str(threads)]
    with LocalGateway(args, env={**env, "GLOTTA_MODEL_REPOSITORY": str(repo)}) as gw:
        return {c: asyncio.run(throughput(gw.url, c, n, prompts)) for c in clients}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="the commit to compare the working tree with")
    ap.add_argument("--model", default="glotta-fr-tiny")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--clients", default="1,16")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    clients = [int(c) for c in a.clients.split(",")]
    prompts = [p["prompt"] for p in sample_prompts()]
    runs: dict[str, dict[int, list[float]]] = {"before": {c: [] for c in clients}, "after": {c: [] for c in clients}}
    with tempfile.TemporaryDirectory() as tmp:
        tree = unpack(a.before, Path(tmp))
        for r in range(a.repeats):
            order = [("before", tree), ("after", None)]
            for label, t in order if r % 2 == 0 else order[::-1]:
                console.log(f"repeat {r + 1}/{a.repeats}: {label}")
                for c, v in measure(t, a.model, a.threads, clients, a.new_tokens, prompts).items():
                    runs[label][c].append(v)
    table = Table(title=f"{a.model}: greedy /v1/completions, {a.new_tokens} tokens, tokens/s, median of {a.repeats}")
    for col in ("clients", f"before ({a.before})", "after (working tree)", "after / before"):
        table.add_column(col, justify="right")
    for c in clients:
        b, f = statistics.median(runs["before"][c]), statistics.median(runs["after"][c])
        table.add_row(str(c), f"{b:.0f}", f"{f:.0f}", f"{f / b:.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
