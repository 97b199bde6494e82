"""The GPU half of `make gpu-check`: the demo model's TensorRT-LLM engine (and, where the FasterTransformer backend is
installed, its FT weights) built, both ensembles loaded in NVIDIA's own tritonserver, and one greedy and one sampled
request sent through each with the gateway's TritonEngine. Runs in the NGC TensorRT-LLM image on a GPU machine;
anywhere else it says what is missing and skips."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import time
from pathlib import Path

from glotta.server.triton.launcher import NGC_BINARY, TritonServer

FT_BACKEND = Path("/opt/tritonserver/backends/fastertransformer")
REQUESTS = {"greedy": dict(temperature=0.0), "sampled (seed 7, T 0.8)": dict(temperature=0.8, seed=7)}


def _trtllm_engine(hf, tok: Path, repo: Path, work: Path) -> None:
    from glotta.modeling.registry import for_hf_config

    from .trtllm import TrtllmPlan, write_build

    family = for_hf_config(hf.config.to_dict())
    plan = TrtllmPlan(work / f"hf-{family.name}", work / "trtllm-checkpoint", repo / "glotta-fr-trtllm-engine" / "1",
                      family.trtllm, max_batch=8, max_input_len=128, max_seq_len=256)
    subprocess.run(["bash", str(write_build(plan, hf, tok, work / "build.sh"))], check=True)


def _ft_weights(hf, tok: Path, repo: Path, work: Path) -> None:
    from glotta.modeling.megatron_hf import save_checkpoint
    from glotta.modeling.megatron_reader import read

    from . import fastertransformer as ft

    cfg = hf.config
    args = argparse.Namespace(num_layers=cfg.n_layer, hidden_size=cfg.n_embd, num_attention_heads=cfg.n_head,
                              padded_vocab_size=cfg.vocab_size, max_position_embeddings=cfg.n_positions,
                              tensor_model_parallel_size=1, pipeline_model_parallel_size=1)
    save_checkpoint(work / "megatron", 1, hf, args, {}, {}, {})
    ft.write(read(work / "megatron"), repo / "glotta-fr-ft-engine" / "1", 1, tok)


async def _ask(repo: Path, ensemble: str, url: str) -> dict[str, str]:
    from glotta.server.engine.interface import GenerationRequest, SamplingParams
    from glotta.server.generation import collect
    from glotta.server.triton.triton_engine import TritonEngine

    engine = TritonEngine(url, repo / ensemble)
    await engine.start()
    try:
        out = {}
        for label, sampling in REQUESTS.items():
            req = GenerationRequest("Le noyau Linux", 24, SamplingParams(**sampling), stream=False)
            c = await collect(engine, req)
            out[label] = f"{c.text!r} ({c.finish_reason})"
        return out
    finally:
        await engine.stop()


def check_ensembles(model_dir: Path, repository: Path, work: Path) -> list[str]:
    if not NGC_BINARY.exists():
        return [f"ensembles skipped: no NGC tritonserver at {NGC_BINARY} (run inside tritonserver:24.10-trtllm)"]
    from .onnx_export import hf_from_onnx

    repo = work / "repository"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(repository, repo, ignore=shutil.ignore_patterns("*-engine"))
    for engine in ("glotta-fr-ft-engine", "glotta-fr-trtllm-engine"):  # the configs, not the (absent) weights
        (repo / engine / "1").mkdir(parents=True)
    hf, lines, ensembles = hf_from_onnx(model_dir), [], []
    from glotta.server.triton.config_writers.engines import engine_config

    for name, build, ready in (("glotta-fr-trtllm", _trtllm_engine, shutil.which("trtllm-build")),
                               ("glotta-fr-ft", _ft_weights, FT_BACKEND.is_dir())):
        if not ready:
            lines.append(f"{name}: skipped (no {'trtllm-build' if 'trtllm' in name else FT_BACKEND} here)")
            continue
        start = time.perf_counter()
        build(hf, model_dir, repo, work / name)
        target = "tensorrtllm-24.10" if "trtllm" in name else "fastertransformer"
        (repo / f"{name}-engine" / "config.pbtxt").write_text(
            engine_config(f"{name}-engine", target, engine_root=str(repo)))
        lines.append(f"{name}: engine built in {time.perf_counter() - start:.0f} s")
        ensembles.append(name)
    if not ensembles:
        return lines
    server = TritonServer(repo, ensembles, 8700, 8701, 8702, workdir=work / "triton")
    try:
        server.start(timeout=600)
        for name in ensembles:
            for label, text in asyncio.run(_ask(repo, name, server.grpc_url)).items():
                lines.append(f"{name} {label}: {text}")
    finally:
        server.stop()
    lines.append(f"tritonserver log: {server.log_path}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """The Triton half of the GPU check, inside the image: `python3 -m glotta.export.gpu_ensembles`."""
    import tempfile

    from glotta.core.paths import model_repository

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repository", type=Path, default=model_repository())
    ap.add_argument("--model", default="glotta-fr-tiny", help="the CPU model whose weights the engines get")
    ap.add_argument("--work", type=Path, default=Path(tempfile.mkdtemp(prefix="glotta-ensembles-")))
    a = ap.parse_args(argv)
    lines = check_ensembles(a.repository / a.model, a.repository, a.work)
    print("\n".join(lines))
    return 0 if not any("skipped" in line for line in lines) else 3


if __name__ == "__main__":
    raise SystemExit(main())
