"""`make gpu-check`: first contact with a lent GPU machine — a bare host, no Docker — in one command that fits in ten
minutes of device time.

    python -m glotta.export.gpu_check [--model model_repository/glotta-fr-tiny] [--tokens 32] [--cpu-only]
                                      [--trtllm-python PATH] [--trtllm-spec tensorrt_llm] [--work DIR]

Steps, in order; each says what it needs, and one that cannot run says why:
  cpu        the ONNX Runtime engine (fp32) on the same weights: the reference greedy tokens and tokens/s (anywhere);
  gpu        a CUDA GPU that `nvidia-smi` lists;
  install    a virtual environment (`.venv-trtllm`, or --trtllm-python) with TensorRT-LLM and TensorRT from
             NVIDIA's package index, and Glotta's code (--no-deps) for its converter and runner;
  engines    fp16, INT8 weight-only, INT8 KV cache and 2:4-sparse engines of the demo model, each written by
             `glotta export trtllm`'s build.sh (TensorRT-LLM's Python API, then trtllm-build), run through
             TensorRT-LLM's runtime (export/trtllm_run.py): greedy agreement with the ONNX engine on the same
             checkpoint (the 2:4 engine against the pruned ONNX weights), tokens/s at batch 1 and 8.
Prints a table. Exit code: 0 when every step asked for ran; 3 when the GPU steps were asked for and this machine
cannot run them (the table says which and why); 1 when a step failed. `--cpu-only` runs the first step alone.

Triton's tensorrtllm backend is not pip-installable: the Triton half (both ensembles in NVIDIA's own tritonserver,
a greedy and a sampled request through each) runs inside the image on a GPU host —
`docker run --gpus all --entrypoint python3 glotta -m glotta.export.gpu_ensembles` (export/gpu_ensembles.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["La configuration du serveur se fait dans le fichier", "Le noyau Linux", "Pour installer un paquet,",
           "Il était une fois une tortue qui vivait dans"]
ENGINES = {"fp16": dict(precision="fp16"), "int8 weight-only": dict(precision="int8"),
           "int8 KV cache": dict(precision="fp16", int8_kv_cache=True), "2:4 sparse": dict(precision="fp16-sparse")}
NEEDS_GPU = 3


@dataclass
class Step:
    name: str
    status: str = "not run"  # ran | failed | skipped
    why: str = ""
    seconds: float = 0.0
    figures: dict = field(default_factory=dict)


def cpu_greedy(graph: Path, prompts: list[list[int]], tokens: int) -> tuple[list[list[int]], float]:
    """Greedy continuations on the CPU engine the gateway serves (one prompt at a time), and batch-1 tokens/s."""
    import numpy as np

    from glotta.server.engine.decoder_session import DecoderSession

    out, start = [], time.perf_counter()
    for ids in prompts:
        model = DecoderSession(graph, 2, 1, len(ids) + tokens)
        logits, lengths = model.prefill([ids], 0)
        nxt = np.array([logits[0][-1].argmax()])
        got = [int(nxt[0])]
        for _ in range(tokens - 1):
            nxt = model.decode(nxt, lengths).argmax(-1)
            lengths = lengths + 1
            got.append(int(nxt[0]))
        out.append(got)
    return out, len(prompts) * tokens / (time.perf_counter() - start)


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Share of positions where both continuations agree, up to the first difference of each prompt."""
    same = total = 0
    for x, y in zip(a, b):
        n = 0
        while n < min(len(x), len(y)) and x[n] == y[n]:
            n += 1
        same, total = same + n, total + len(x)
    return same / max(total, 1)


def gpu_visible() -> str | None:
    """None when a CUDA GPU is listed, else why not."""
    if shutil.which("nvidia-smi") is None:
        return "no nvidia-smi: no NVIDIA driver on this machine"
    r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return None if r.returncode == 0 and "GPU" in r.stdout else f"nvidia-smi lists no GPU ({r.stderr.strip()})"


def install(venv: Path, spec: str) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = subprocess.run([str(python), "-c", "import tensorrt_llm"], capture_output=True, text=True)
    if probe.returncode:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--extra-index-url", "https://pypi.nvidia.com",
                        spec], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(ROOT)], check=True)
    return python


def _run(cmd: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} … exited {r.returncode}: {(r.stderr or r.stdout)[-800:]}")
    return r


def build_and_run(label: str, options: dict, model: Path, python: Path, work: Path, prompts: list[list[int]],
                  tokens: int, eod: int) -> dict:
    """One engine: the HF folder of the weights (pruned to 2:4 for the sparse engine), build.sh, the runtime."""
    import os

    from glotta.modeling.engine_graph import engine_graph
    from glotta.modeling.registry import for_hf_config

    from .onnx_export import hf_from_onnx
    from .trtllm import TrtllmPlan, write_build

    folder = work / label.replace(" ", "-")
    source = model
    if options["precision"].endswith("sparse"):  # the same checkpoint as the ONNX reference: pruned first
        from .sparsity import sparsify_onnx

        source = folder / "pruned"
        shutil.copytree(model, source, dirs_exist_ok=True)
        sparsify_onnx(model / "1" / "model.onnx", source / "1" / "model.onnx")
    hf = hf_from_onnx(source)
    family = for_hf_config(hf.config.to_dict())
    calib = work / "calib.jsonl"
    calib.write_text("".join(json.dumps({"text": p}) + "\n" for p in PROMPTS * 8))
    plan = TrtllmPlan(folder / f"hf-{family.name}", folder / "checkpoint", folder / "engine", family.trtllm,
                      max_batch=8, max_input_len=64, max_seq_len=64 + tokens, calib_dataset=str(calib), **options)
    build = write_build(plan, hf, model, folder / "build.sh")
    bin_dir = str(python.parent)
    env = {**os.environ, "PYTHON": str(python), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.perf_counter()
    _run(["bash", str(build)], env)
    built = time.perf_counter() - start
    (folder / "prompts.json").write_text(json.dumps(prompts))
    r = _run([str(python), "-m", "glotta.export.trtllm_run", "--engine-dir", str(plan.engine_dir), "--prompts",
              str(folder / "prompts.json"), "--tokens", str(tokens), "--end-id", str(eod)], env)
    result = json.loads(r.stdout.strip().splitlines()[-1])
    reference, _ = cpu_greedy(engine_graph(source), prompts, tokens)
    return {"build s": round(built), "agreement": round(agreement(reference, result["greedy"]), 3),
            **{f"tok/s @{b}": round(v) for b, v in result["tokens_per_s"].items()}}


def table(steps: list[Step]) -> str:
    lines = ["| step | status | seconds | figures / why |", "|---|---|---|---|"]
    for s in steps:
        shown = ", ".join(f"{k} {v}" for k, v in s.figures.items()) or s.why
        lines.append(f"| {s.name} | {s.status} | {s.seconds:.0f} | {shown} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "model_repository" / "glotta-fr-tiny")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--cpu-only", action="store_true", help="only the CPU reference (no GPU step is asked for)")
    ap.add_argument("--trtllm-python", type=Path, help="a Python that has TensorRT-LLM (skips the install)")
    ap.add_argument("--trtllm-spec", default="tensorrt_llm", help="what pip installs (e.g. tensorrt_llm==0.14.0)")
    ap.add_argument("--work", type=Path, help="folder for the engines (default: a temporary one)")
    a = ap.parse_args(argv)
    from glotta.core.tokenizer import Tokenizer
    from glotta.modeling.engine_graph import engine_graph

    work = a.work or Path(tempfile.mkdtemp(prefix="glotta-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(a.model / "tokenizer.json")
    prompts = [tok.encode(p) for p in PROMPTS]
    steps = [Step("cpu"), Step("gpu"), Step("install"), *(Step(f"engine {label}") for label in ENGINES)]
    start = time.perf_counter()
    reference, speed = cpu_greedy(engine_graph(a.model), prompts, a.tokens)
    steps[0].status, steps[0].seconds = "ran", time.perf_counter() - start
    steps[0].figures = {"tok/s @1": round(speed), "tokens": sum(map(len, reference))}
    python = None
    if a.cpu_only:
        for s in steps[1:]:
            s.status, s.why = "skipped", "--cpu-only"
    elif (why := gpu_visible()) is not None:
        for s in steps[1:]:
            s.status, s.why = "skipped", f"needs a GPU: {why}"
    else:
        steps[1].status, steps[1].why = "ran", "nvidia-smi lists a GPU"
        start = time.perf_counter()
        try:
            python = a.trtllm_python or install(ROOT / ".venv-trtllm", a.trtllm_spec)
            steps[2].status = "ran"
        except (subprocess.CalledProcessError, OSError) as e:
            steps[2].status, steps[2].why = "failed", str(e)
        steps[2].seconds = time.perf_counter() - start
    for step, (label, options) in zip(steps[3:], ENGINES.items()):
        if python is None:
            step.status, step.why = step.status if step.why else "skipped", step.why or "TensorRT-LLM not installed"
            continue
        start = time.perf_counter()
        try:
            step.figures = build_and_run(label, options, a.model, python, work, prompts, a.tokens, tok.eod_id)
            step.status = "ran"
        except (RuntimeError, OSError, ValueError) as e:
            step.status, step.why = "failed", str(e).replace("\n", " ")
        step.seconds = time.perf_counter() - start
        print(f"{step.name}: {step.status} {step.figures or step.why}", flush=True)
    print(table(steps))
    print(f"engines and logs: {work}")
    if any(s.status == "failed" for s in steps):
        return 1
    return NEEDS_GPU if not a.cpu_only and any(s.status == "skipped" for s in steps) else 0


if __name__ == "__main__":
    raise SystemExit(main())
