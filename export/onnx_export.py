"""Hugging Face GPT-2 → ONNX with a KV cache (torch dynamo exporter), in the layout the CPU engine loads.

Graph signature (the optimum / ORT naming): inputs `input_ids[b,s]`, `attention_mask[b,past+s]`, `position_ids[b,s]`,
`past_key_values.{i}.key|value[b,h,past,d]`; outputs `logits[b,s,v]`, `present.{i}.key|value[b,h,past+s,d]`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def kv_names(n_layer: int) -> tuple[list[str], list[str]]:
    past = [f"past_key_values.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]
    return past, present


def export_gpt2_onnx(model, path: str | Path, fp16_weights: bool = False) -> Path:
    """Export a `transformers` GPT2LMHeadModel; with `fp16_weights` the file stores weights in half precision.

    Half-precision storage halves the file (what git keeps forever); ONNX Runtime folds the Cast back to fp32 when the
    session loads, so the arithmetic stays fp32.
    """
    import torch
    from transformers.cache_utils import DynamicCache

    cfg = model.config
    n_layer, n_head = cfg.n_layer, cfg.n_head
    head_dim = cfg.n_embd // n_head

    class KVWrapper(torch.nn.Module):
        def __init__(self, m) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache(config=self.m.config)
            for i in range(n_layer):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.m(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
            )
            flat = []
            for layer in out.past_key_values.layers:
                flat += [layer.keys, layer.values]
            return (out.logits, *flat)

    model = model.eval()
    batch, seq, past_len = 2, 3, 5
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    mask = torch.ones(batch, past_len + seq, dtype=torch.int64)
    pos = torch.arange(past_len, past_len + seq).unsqueeze(0).expand(batch, -1).contiguous()
    past = tuple(torch.zeros(batch, n_head, past_len, head_dim) for _ in range(2 * n_layer))

    B = torch.export.Dim("batch", min=1, max=1024)
    S = torch.export.Dim("seq", min=1, max=cfg.n_positions)
    P = torch.export.Dim("past", min=0, max=cfg.n_positions)
    dyn = (
        {0: B, 1: S},
        {0: B, 1: torch.export.Dim.DYNAMIC},
        {0: B, 1: S},
        tuple({0: B, 2: P} for _ in range(2 * n_layer)),  # *past arrives as one tuple
    )
    past_names, present_names = kv_names(n_layer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(
                KVWrapper(model).eval(),
                (ids, mask, pos, *past),
                str(raw),
                dynamo=True,
                opset_version=18,
                external_data=False,
                input_names=["input_ids", "attention_mask", "position_ids", *past_names],
                output_names=["logits", *present_names],
                dynamic_shapes=dyn,
            )
        proto = onnx.load(str(raw))
        if fp16_weights:
            store_weights_fp16(proto)
        tmp_out = path.with_suffix(".onnx.tmp")
        onnx.save_model(proto, str(tmp_out))
        os.replace(tmp_out, path)
    return path


def store_weights_fp16(proto: onnx.ModelProto, min_elements: int = 1024) -> None:
    """Store each large fp32 initializer as fp16 behind a Cast node (in place)."""
    graph = proto.graph
    casts = []
    keep = []
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and int(np.prod(init.dims)) >= min_elements:
            half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "_fp16")
            keep.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT))
        else:
            keep.append(init)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)


def hf_from_onnx(model_dir: str | Path):
    """Rebuild the `transformers` GPT2LMHeadModel whose weights a Glotta ONNX engine holds.

    The dynamo exporter names initializers after the module's parameters (`m.transformer.h.0.attn.c_attn.weight`),
    so the shipped engine is also a checkpoint: baselines and fine-tuning start from exactly the served weights.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from glotta.modeling.model_folder import ModelFolder

    folder = ModelFolder.open(model_dir)
    arch, eod = folder.spec.architecture, folder.tokenizer().eod_id
    cfg = GPT2Config(
        vocab_size=arch.vocab_size,
        n_positions=arch.n_positions,
        n_embd=arch.n_embd,
        n_layer=arch.n_layer,
        n_head=arch.n_head,
        bos_token_id=eod,
        eos_token_id=eod,
        tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(cfg)
    proto = onnx.load(str(folder.onnx_path))
    state = {}
    for init in proto.graph.initializer:
        name = init.name.removeprefix("m.").removesuffix("_fp16")
        state[name] = torch.from_numpy(numpy_helper.to_array(init).astype(np.float32))
    # tied embeddings are stored once, under whichever of the two names the exporter kept
    tied = state.get("transformer.wte.weight", state.get("lm_head.weight"))
    if tied is not None:
        state["transformer.wte.weight"] = state["lm_head.weight"] = tied
    missing, unexpected = model.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if k.startswith("transformer.")]
    if missing or unexpected:
        raise ValueError(f"{model_dir}: ONNX weights do not match GPT-2 ({missing=}, {unexpected=})")
    return model.eval()
