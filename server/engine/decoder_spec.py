"""What the fused decoder graph needs to know about a model: its shape and its weights under one naming.

Two families cover the models people serve: GPT-2 (learned positions, LayerNorm with bias, GELU MLP, tied head) and
Llama (RoPE, RMSNorm, SwiGLU, grouped KV heads, optional untied head). Readers bring each source to the same
canonical weights, all stored `x @ W` ([in, out]) so the graph never transposes:

    embed [V, E]   pos_embed [P, E] (gpt2)   lm_head [E, V]   lnf.w / lnf.b
    layer i: ln1.w ln1.b  qkv.w [E, (N + 2 KV) D]  qkv.b  o.w [N D, E]  o.b  ln2.w ln2.b
             up.w [E, F] (gpt2) or [E, 2 F] (llama: gate then up)  up.b  down.w [F, E]  down.b

Sources: the exchange ONNX Glotta exports (torch dynamo names), and Hugging Face state dicts (safetensors, numpy).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from glotta.core.errors import invalid


@dataclass(frozen=True)
class DecoderSpec:
    family: str
    vocab_size: int
    n_layer: int
    n_embd: int
    n_head: int
    n_kv_head: int
    n_positions: int
    intermediate_size: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = field(default=None, hash=False)
    head_dim: int = 0  # 0: n_embd // n_head

    @property
    def d_head(self) -> int:
        return self.head_dim or self.n_embd // self.n_head

    def to_json(self) -> dict:
        return asdict(self)

    def parameters(self) -> int:
        d = self.d_head
        attn = self.n_embd * (self.n_head + 2 * self.n_kv_head) * d + self.n_head * d * self.n_embd
        mlp = self.n_embd * self.intermediate_size * (3 if self.family == "llama" else 2)
        return self.n_layer * (attn + mlp) + self.vocab_size * self.n_embd


def rope_tables(spec: DecoderSpec) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin caches [n_positions, d_head / 2] with the config's theta and the rope_scaling it declares."""
    d = spec.d_head
    inv_freq = 1.0 / (spec.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
    positions = np.arange(spec.n_positions, dtype=np.float64)
    scaling = dict(spec.rope_scaling or {})
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "linear":
        positions = positions / float(scaling["factor"])
    elif kind == "llama3":
        inv_freq = _llama3_inv_freq(inv_freq, scaling)
    elif kind != "default":
        raise invalid(
            f"rope_scaling type {kind!r} is not supported (supported: default, linear, llama3)", "rope_scaling"
        )
    angles = np.outer(positions, inv_freq)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def _llama3_inv_freq(inv_freq: np.ndarray, s: dict) -> np.ndarray:
    factor, low, high = float(s["factor"]), float(s["low_freq_factor"]), float(s["high_freq_factor"])
    old = float(s["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    smooth = (old / wavelen - low) / (high - low)
    mid = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    out = np.where(wavelen > old / low, inv_freq / factor, inv_freq)
    between = (wavelen <= old / low) & (wavelen >= old / high)
    return np.where(between, mid, out)


# -- readers ---------------------------------------------------------------------------------------------------------


def gpt2_weights(state: dict[str, np.ndarray], n_layer: int) -> dict[str, np.ndarray]:
    """Canonical weights from a GPT-2 state dict (HF names, with or without the `transformer.` prefix; Conv1D
    weights are already [in, out])."""
    prefix = "transformer." if "transformer.wpe.weight" in state else ""
    get = lambda k: np.asarray(state[prefix + k], np.float32)  # noqa: E731
    head = state.get("lm_head.weight")
    embed = state.get(prefix + "wte.weight", head)  # tied: the exporter may keep only one of the two names
    w = {
        "embed": np.asarray(embed, np.float32),
        "pos_embed": get("wpe.weight"),
        "lnf.w": get("ln_f.weight"),
        "lnf.b": get("ln_f.bias"),
    }
    w["lm_head"] = np.ascontiguousarray((w["embed"] if head is None else np.asarray(head, np.float32)).T)
    for i in range(n_layer):
        w |= {f"{i}.{ours}": get(f"h.{i}.{theirs}") for ours, theirs in _GPT2_LAYER.items()}
    return w


_GPT2_LAYER = {"ln1.w": "ln_1.weight", "ln1.b": "ln_1.bias", "qkv.w": "attn.c_attn.weight", "qkv.b": "attn.c_attn.bias",
               "o.w": "attn.c_proj.weight", "o.b": "attn.c_proj.bias", "ln2.w": "ln_2.weight", "ln2.b": "ln_2.bias",
               "up.w": "mlp.c_fc.weight", "up.b": "mlp.c_fc.bias", "down.w": "mlp.c_proj.weight",
               "down.b": "mlp.c_proj.bias"}


def llama_weights(state: dict[str, np.ndarray], n_layer: int) -> dict[str, np.ndarray]:
    """Canonical weights from a LlamaForCausalLM state dict (nn.Linear weights are [out, in]: transposed here)."""
    get = lambda k: np.asarray(state[k], np.float32)  # noqa: E731
    t = lambda k: np.ascontiguousarray(get(k).T)  # noqa: E731
    w = {"embed": get("model.embed_tokens.weight"), "lnf.w": get("model.norm.weight")}
    w["lm_head"] = t("lm_head.weight") if "lm_head.weight" in state else np.ascontiguousarray(w["embed"].T)
    for i in range(n_layer):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        w[f"{i}.qkv.w"] = np.concatenate([t(a + f"{x}_proj.weight") for x in "qkv"], axis=1)
        if a + "q_proj.bias" in state:
            w[f"{i}.qkv.b"] = np.concatenate([get(a + f"{x}_proj.bias") for x in "qkv"])
        w[f"{i}.o.w"] = t(a + "o_proj.weight")
        if a + "o_proj.bias" in state:
            w[f"{i}.o.b"] = get(a + "o_proj.bias")
        w[f"{i}.ln1.w"] = get(p + "input_layernorm.weight")
        w[f"{i}.ln2.w"] = get(p + "post_attention_layernorm.weight")
        w[f"{i}.up.w"] = np.concatenate([t(p + "mlp.gate_proj.weight"), t(p + "mlp.up_proj.weight")], axis=1)
        w[f"{i}.down.w"] = t(p + "mlp.down_proj.weight")
    return w


def gpt2_spec(vocab_size: int, n_layer: int, n_embd: int, n_head: int, n_positions: int, intermediate_size: int,
              norm_eps: float = 1e-5) -> DecoderSpec:
    """A GPT-2: every head has its own keys and values."""
    return DecoderSpec(family="gpt2", vocab_size=vocab_size, n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                       n_kv_head=n_head, n_positions=n_positions, intermediate_size=intermediate_size,
                       norm_eps=norm_eps)


def spec_from_hf_config(cfg: dict) -> DecoderSpec:
    """The spec of a Hugging Face config.json; other architectures get an error naming the supported ones."""
    arch = (cfg.get("architectures") or [cfg.get("model_type", "?")])[0]
    if arch == "GPT2LMHeadModel" or (arch == "gpt2"):
        return gpt2_spec(cfg["vocab_size"], cfg["n_layer"], cfg["n_embd"], cfg["n_head"], cfg["n_positions"],
                         cfg.get("n_inner") or 4 * cfg["n_embd"], cfg.get("layer_norm_epsilon", 1e-5))
    if arch == "LlamaForCausalLM" or arch == "llama":
        if cfg.get("hidden_act", "silu") != "silu":
            raise invalid(f"hidden_act {cfg['hidden_act']!r} is not supported for Llama (silu only)", "hidden_act")
        if cfg.get("mlp_bias"):
            raise invalid("Llama with mlp_bias is not supported", "mlp_bias")
        # transformers ≥ 5 writes rope_parameters {rope_theta, rope_type, ...}; earlier ones rope_theta + rope_scaling
        rope = dict(cfg.get("rope_parameters") or {})
        theta = rope.pop("rope_theta", cfg.get("rope_theta", 10000.0))
        scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
        return DecoderSpec(
            family="llama",
            vocab_size=cfg["vocab_size"],
            n_layer=cfg["num_hidden_layers"],
            n_embd=cfg["hidden_size"],
            n_head=cfg["num_attention_heads"],
            n_kv_head=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
            n_positions=cfg.get("max_position_embeddings", 2048),
            intermediate_size=cfg["intermediate_size"],
            norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=theta,
            rope_scaling=scaling,
            head_dim=cfg.get("head_dim") or 0,
        )
    raise invalid(
        f"architecture {arch!r} is not supported (supported: GPT2LMHeadModel, LlamaForCausalLM)", "architectures"
    )


def spec_from_meta(meta: dict) -> DecoderSpec:
    """The spec of a Glotta model folder (glotta.json); folders from before Llama support are GPT-2."""
    if "decoder" in meta:
        return DecoderSpec(**meta["decoder"])
    e = meta["n_embd"]
    return gpt2_spec(meta["vocab_size"], meta["n_layer"], e, meta["n_head"], meta["n_positions"], 4 * e)


def spec_from_exchange(proto, state: dict[str, np.ndarray]) -> DecoderSpec:
    """The GPT-2 spec an exchange ONNX implies: heads from its cache inputs, sizes from its weights."""
    pasts = [i for i in proto.graph.input if i.name.startswith("past_key_values.")]
    dims = [d.dim_value for d in pasts[0].type.tensor_type.shape.dim]
    prefix = "transformer." if "transformer.wpe.weight" in state else ""
    n_positions, n_embd = state[prefix + "wpe.weight"].shape
    vocab = state.get("lm_head.weight", state.get(prefix + "wte.weight")).shape[0]
    return gpt2_spec(int(vocab), len(pasts) // 2, int(n_embd), dims[1], int(n_positions),
                     int(state[prefix + "h.0.mlp.c_fc.weight"].shape[1]))


def exchange_onnx_state(proto) -> dict[str, np.ndarray]:
    """The HF-named GPT-2 state dict held by an exchange ONNX (torch dynamo export).

    Names alone are not enough: the exporter stores equal tensors once (untrained layer norms share one initializer)
    and drops zero biases, so layer norms and linear layers are read in graph order from the nodes that use them.
    """
    from onnx import numpy_helper

    arrays = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in proto.graph.initializer}
    state = {name.removeprefix("m.").removesuffix("_fp16"): a for name, a in arrays.items()}
    for node in proto.graph.node:  # fp16 storage: the graph reads each weight through a Cast
        if node.op_type == "Cast" and node.input[0] in arrays:
            arrays[node.output[0]] = arrays[node.input[0]]
    norms = [n for n in proto.graph.node if n.op_type == "LayerNormalization"]
    linears = [n for n in proto.graph.node if n.op_type in ("Gemm", "MatMul") and len(n.input) > 1
               and n.input[1] in arrays and arrays[n.input[1]].ndim == 2]
    n_layer = (len(norms) - 1) // 2
    if len(norms) != 2 * n_layer + 1 or len(linears) != 4 * n_layer:
        raise ValueError(f"not a GPT-2 exchange graph: {len(norms)} layer norms, {len(linears)} linear layers")
    prefix = "transformer."
    for k, node in enumerate(norms):
        name = "ln_f" if k == 2 * n_layer else f"h.{k // 2}.ln_{k % 2 + 1}"
        state[f"{prefix}{name}.weight"] = arrays[node.input[1]]
        state[f"{prefix}{name}.bias"] = arrays[node.input[2]] if len(node.input) > 2 and node.input[2] else \
            np.zeros_like(arrays[node.input[1]])
    for k, node in enumerate(linears):
        name = f"h.{k // 4}." + ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")[k % 4]
        weight = arrays[node.input[1]]
        if any(a.name == "transB" and a.i for a in node.attribute):
            weight = weight.T
        state[f"{prefix}{name}.weight"] = weight
        bias = arrays.get(node.input[2]) if len(node.input) > 2 else None
        state[f"{prefix}{name}.bias"] = bias if bias is not None else np.zeros(weight.shape[1], np.float32)
    return state
