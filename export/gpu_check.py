"""GPU check: build the demo model's TensorRT engines (FP16, INT8, INT8 + 2:4) and print their greedy tokens/s
next to the CPU ONNX Runtime figures, in one command that finishes within ten minutes on one GPU:

    python -m glotta.export.gpu_check [--model model_repository/glotta-fr-tiny] [--tokens 128] [--batches 1,8]

Without TensorRT or a GPU it still runs the CPU side (ONNX Runtime fp32 / INT8, the 2:4 and Q/DQ ONNX preparation)
and says what is missing. The TensorRT runner feeds the KV-cache graph step by step with torch CUDA buffers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from .tensorrt import DECODE, PREFILL

PROMPT = "La configuration du serveur se fait dans le fichier"


def _prompt_ids(model: Path, batch: int) -> np.ndarray:
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(model / "tokenizer.json")).encode(PROMPT).ids
    return np.array([ids] * batch, np.int64)


def cpu_tokens_per_s(graph: Path, ids: np.ndarray, tokens: int) -> float:
    """Greedy decode on the CPU with the fused decoder graph the gateway serves."""
    import os

    from glotta.server.engine.decoder_session import DecoderSession

    model = DecoderSession(graph, os.cpu_count() or 1, ids.shape[0], ids.shape[1] + tokens)
    start = time.perf_counter()
    logits, lengths = model.prefill([list(r) for r in ids], 0)
    next_ids = np.array([row[-1].argmax() for row in logits])
    for _ in range(tokens - 1):
        next_ids = model.decode(next_ids, lengths).argmax(-1)
        lengths = lengths + 1
    return ids.shape[0] * tokens / (time.perf_counter() - start)


def agreement(reference: Path, other: Path, prompts: list[list[int]]) -> float:
    """Share of positions where both ONNX models (CPU) pick the same next token, over every prompt position."""
    from glotta.server.engine.onnx_model import OnnxCausalLM

    a, b = OnnxCausalLM(reference), OnnxCausalLM(other)
    same = total = 0
    for ids in prompts:
        x, _ = a.prefill([ids], 0)
        y, _ = b.prefill([ids], 0)
        same += int((x[0].argmax(-1) == y[0].argmax(-1)).sum())
        total += len(ids)
    return same / max(total, 1)


class TrtRunner:
    """One TensorRT execution context over the KV-cache graph: prefill, then one token per step."""

    def __init__(self, plan: Path) -> None:
        import tensorrt as trt
        import torch

        self.trt, self.torch = trt, torch
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(plan.read_bytes())
        self.ctx = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.past_names = [n for n in self.inputs if n.startswith("past_key_values.")]

    def _dtype(self, name: str):
        return getattr(self.torch, np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name))).name)

    def _run(self, feeds: dict, profile: int) -> dict:
        torch = self.torch
        # our stream is non-blocking (PyTorch's kind): it must wait for the stream that produced the inputs
        self.stream.wait_stream(torch.cuda.current_stream())
        if self.ctx.active_optimization_profile != profile:
            self.ctx.set_optimization_profile_async(profile, self.stream.cuda_stream)
        keep = []
        for name in self.inputs:
            t = feeds[name].to(self._dtype(name)).contiguous()
            keep.append(t)
            self.ctx.set_input_shape(name, tuple(t.shape))
            # an empty past still needs a valid address
            self.ctx.set_tensor_address(name, t.data_ptr() if t.numel() else torch.empty(1, device="cuda").data_ptr())
        out = {}
        for name in self.outputs:
            out[name] = torch.empty(tuple(self.ctx.get_tensor_shape(name)), dtype=self._dtype(name), device="cuda")
            self.ctx.set_tensor_address(name, out[name].data_ptr())
        self.ctx.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return out

    def tokens_per_s(self, ids: np.ndarray, tokens: int) -> float:
        torch = self.torch
        b, s = ids.shape
        shape = self.engine.get_tensor_shape(self.past_names[0])  # [-1, heads, -1, head_dim]
        past = {n: torch.zeros((b, shape[1], 0, shape[3]), device="cuda") for n in self.past_names}
        x = torch.from_numpy(ids).cuda()
        mask = torch.ones((b, s), dtype=torch.int64, device="cuda")
        pos = torch.arange(s, device="cuda").expand(b, s)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for step in range(tokens):
            out = self._run({"input_ids": x, "attention_mask": mask, "position_ids": pos, **past},
                            DECODE if step else PREFILL)
            x = out["logits"][:, -1].argmax(-1, keepdim=True).to(torch.int64)
            past = {p: out[p.replace("past_key_values.", "present.")] for p in self.past_names}
            mask = torch.ones((b, mask.shape[1] + 1), dtype=torch.int64, device="cuda")
            pos = torch.full((b, 1), s + step, dtype=torch.int64, device="cuda")
        torch.cuda.synchronize()
        return b * tokens / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="model_repository/glotta-fr-tiny")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", help="folder for the ONNX variants and plans (default: a temporary one)")
    a = ap.parse_args(argv)
    from glotta.export.sparsity import sparsify_onnx, verify_path
    from glotta.modeling.engine_graph import engine_graph

    from . import tensorrt as trt_export
    from .tensorrt import calibration_ids

    model = Path(a.model)
    onnx_path = model / "1" / "model.onnx"
    batches = [int(b) for b in a.batches.split(",")]
    work = Path(a.work or tempfile.mkdtemp(prefix="glotta-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    median = lambda f: statistics.median(f() for _ in range(a.repeats))  # noqa: E731
    rows: dict[str, dict[int, float]] = {}
    engines = {"CPU engine fp32": engine_graph(model), "CPU engine INT8": engine_graph(model, "int8")}
    for label, path in engines.items():
        rows[label] = {b: median(lambda: cpu_tokens_per_s(path, _prompt_ids(model, b), a.tokens)) for b in batches}
        print(label, json.dumps(rows[label]), flush=True)
    sparse = work / "sparse.onnx"
    sparsify_onnx(onnx_path, sparse)
    calib = calibration_ids(model)
    qdq = trt_export.quantize_qdq(onnx_path, work / "qdq.onnx", calib)
    qdq_sparse = trt_export.quantize_qdq(sparse, work / "qdq-sparse.onnx", calib)
    print(f"prepared {sparse} (2:4 verifier: {verify_path(sparse).ok}), {qdq}, {qdq_sparse}", flush=True)
    for label, path in (("Q/DQ INT8", qdq), ("Q/DQ INT8 + 2:4 (no recovery fine-tune)", qdq_sparse)):
        print(f"{label} ONNX: next-token agreement with fp32 on the calibration prompts "
              f"{agreement(onnx_path, path, calib):.3f}", flush=True)
    try:
        trt_export.require_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise trt_export.TensorRTUnavailable("no CUDA GPU visible to torch")
    except (trt_export.TensorRTUnavailable, ImportError) as e:
        print(f"TensorRT part skipped: {e}")
        _table(rows, batches)
        return _ensembles(model, work)
    builds = {"TensorRT FP16": (onnx_path, dict(fp16=True)), "TensorRT INT8": (qdq, dict(fp16=True, int8=True)),
              "TensorRT INT8 + 2:4": (qdq_sparse, dict(fp16=True, int8=True, sparse=True))}
    seq = _prompt_ids(model, 1).shape[1] + a.tokens + 1
    for label, (src, flags) in builds.items():
        start = time.perf_counter()
        info = trt_export.build_engine(src, work / f"{label.split()[-1]}.plan", max_batch=max(batches), max_seq=seq,
                                       **flags)
        print(f"{label}: built in {time.perf_counter() - start:.0f} s, {info['bytes'] / 2**20:.1f} MiB; "
              f"{' | '.join(info['sparsity_log'][-2:]) or 'no sparsity lines'}", flush=True)
        runner = TrtRunner(Path(info["plan"]))
        runner.tokens_per_s(_prompt_ids(model, 1), 8)  # warm-up
        rows[label] = {b: median(lambda: runner.tokens_per_s(_prompt_ids(model, b), a.tokens)) for b in batches}
        print(label, json.dumps(rows[label]), flush=True)
    _table(rows, batches)
    return _ensembles(model, work)


def _ensembles(model: Path, work: Path) -> int:
    """Both GPU ensembles in NVIDIA's tritonserver, one greedy and one sampled request each (gpu_ensembles.py)."""
    from .gpu_ensembles import check_ensembles

    print("\n".join(check_ensembles(model, model.parent, work / "ensembles")), flush=True)
    return 0


def _table(rows: dict[str, dict[int, float]], batches: list[int]) -> None:
    base = rows["CPU engine fp32"]
    print("\n| engine | " + " | ".join(f"batch {b} tok/s (× CPU fp32)" for b in batches) + " |")
    for label, r in rows.items():
        print(f"| {label} | " + " | ".join(f"{r[b]:,.0f} ({r[b] / base[b]:.1f}×)" for b in batches) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
