"""`ModelSpec`: one typed, versioned description of a model — the schema of a served folder's glotta.json.

Only this module reads or writes glotta.json (through `ModelSpec.read` / `ModelSpec.write`). The spec describes a
model by its *traits* — where positions come from, which norm, which MLP, which biases, how many key/value heads —
so the graph builder, the checkpoint reader and the parameter arithmetic branch on traits, never on a family's name;
the family (modeling/families) is where a source format's names map to those traits.

    {"schema_version": 2, "name", "family",
     "architecture": {vocab_size, n_layer, n_embd, n_head, n_kv_head, head_dim, n_positions, intermediate_size,
                      positions, norm, norm_eps, mlp, qkv_bias, out_bias, mlp_bias, tied_embeddings, rope_theta,
                      rope_scaling},
     "weights": "exchange" | "fused", "tokenizer": {file, eos_tokens, bos_token, pad_token},
     "parameters", "source", "card": {...}}

`weights`: `exchange` is the torch-exported GPT graph with `past_key_values` (what the GPU builders read); `fused` is
the engine's own decoder graph (decoder_graph.py), already built. `card` holds what a model card says and no code
reads (training figures, language). Folders written before this schema (no `schema_version`) are read as they were
meant: a GPT-2 exchange export, or a fused graph with its `decoder` record.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from glotta.core.atomic import atomic_write
from glotta.core.errors import invalid

SCHEMA_VERSION = 2
META = "glotta.json"
EOD_TOKEN = "<|endoftext|>"  # GPT-2's and Megatron's end of document, the default of Glotta-trained tokenizers
_CHOICES = {"positions": ("learned", "rope"), "norm": ("layernorm", "rmsnorm"), "mlp": ("gelu", "swiglu"),
            "weights": ("exchange", "fused")}


@dataclass(frozen=True)
class Architecture:
    vocab_size: int
    n_layer: int
    n_embd: int
    n_head: int
    n_kv_head: int
    n_positions: int
    intermediate_size: int
    head_dim: int = 0  # 0: n_embd // n_head
    positions: str = "learned"  # learned (a position table) | rope
    norm: str = "layernorm"  # layernorm (with bias) | rmsnorm
    norm_eps: float = 1e-5
    mlp: str = "gelu"  # gelu (up, GELU, down) | swiglu (gate and up, SiLU(gate)·up, down)
    qkv_bias: bool = True
    out_bias: bool = True  # the attention output projection's bias
    mlp_bias: bool = True
    tied_embeddings: bool = True  # the output layer is the word embedding
    rope_theta: float = 10000.0
    rope_scaling: dict | None = field(default=None, hash=False)

    @property
    def d_head(self) -> int:
        return self.head_dim or self.n_embd // self.n_head

    def parameters(self) -> int:
        """Exact parameter count from the traits: embeddings (and positions), per layer two norms, QKV, output
        projection and MLP with their biases, the final norm, an untied head."""
        e, d, f = self.n_embd, self.d_head, self.intermediate_size
        norm = e * (2 if self.norm == "layernorm" else 1)
        qkv = e * (self.n_head + 2 * self.n_kv_head) * d + ((self.n_head + 2 * self.n_kv_head) * d if self.qkv_bias
                                                             else 0)
        out = self.n_head * d * e + (e if self.out_bias else 0)
        mlp = (3 if self.mlp == "swiglu" else 2) * e * f + ((f + e) if self.mlp_bias else 0)
        total = self.n_layer * (2 * norm + qkv + out + mlp) + norm + self.vocab_size * e
        total += self.n_positions * e if self.positions == "learned" else 0
        return total + (0 if self.tied_embeddings else self.vocab_size * e)

    def kv_bytes_per_token(self, bytes_per_value: float = 2.0) -> float:
        """Key and value of every layer for one token (grouped heads count once per group)."""
        return 2 * self.n_layer * self.n_kv_head * self.d_head * bytes_per_value


@dataclass(frozen=True)
class TokenizerSpec:
    file: str = "tokenizer.json"
    # generation stops at any of these; the first is Megatron's EOD (`add_BOS`, an empty prompt). None at all: the
    # model has no end token, and generation stops at the length asked for
    eos_tokens: tuple[str, ...] = (EOD_TOKEN,)
    bos_token: str | None = None  # informative: whether prompts start with it is the tokenizer's own post-processor
    pad_token: str | None = None


LIMITS = ("max_input_len", "max_seq_len")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    architecture: Architecture
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    weights: str = "exchange"
    source: str | None = None
    card: dict = field(default_factory=dict, hash=False)
    # what the engine built for this folder accepts, where less than the architecture (a TensorRT-LLM build's
    # max_input_len and max_seq_len; `glotta export trtllm --engine-dir` writes them)
    limits: dict = field(default_factory=dict, hash=False)

    @property
    def parameters(self) -> int:
        return self.architecture.parameters()

    def with_(self, **changes) -> "ModelSpec":
        return replace(self, **changes)

    def to_json(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, "name": self.name, "family": self.family,
                "architecture": asdict(self.architecture), "weights": self.weights,
                "tokenizer": {**asdict(self.tokenizer), "eos_tokens": list(self.tokenizer.eos_tokens)},
                "parameters": self.parameters, "source": self.source, "card": self.card,
                **({"limits": self.limits} if self.limits else {})}

    @classmethod
    def from_json(cls, data: Any, where: str = META) -> "ModelSpec":
        """The spec a glotta.json holds; an error names the file and the field."""
        if not isinstance(data, dict):
            raise invalid(f"{where}: not a JSON object", "glotta.json")
        if "schema_version" not in data:
            return _from_v1(data, where)
        if data["schema_version"] != SCHEMA_VERSION:
            raise invalid(f"{where}: schema_version {data['schema_version']!r} is not one this Glotta reads "
                          f"({SCHEMA_VERSION}); upgrade Glotta or re-export the model", "schema_version")
        arch = _record(Architecture, data.get("architecture"), where, "architecture")
        tok = _record(TokenizerSpec, data.get("tokenizer", {}), where, "tokenizer")
        spec = cls(name=_field(data, "name", str, where), family=_field(data, "family", str, where),
                   architecture=arch, tokenizer=replace(tok, eos_tokens=tuple(tok.eos_tokens)),
                   weights=data.get("weights", "exchange"), source=data.get("source"), card=data.get("card") or {},
                   limits=data.get("limits") or {})
        spec.check(where)
        return spec

    def check(self, where: str = META) -> None:
        """The registry knows the family, every choice is one of its values, every size is positive."""
        from .registry import get

        get(self.family, where)
        for key, value in self.limits.items():
            if key not in LIMITS or not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise invalid(f"{where}: limits.{key} must be one of {LIMITS} with a positive integer", "limits")
        a = self.architecture
        for name, allowed in _CHOICES.items():
            value = self.weights if name == "weights" else getattr(a, name)
            if value not in allowed:
                raise invalid(f"{where}: {name} must be one of {', '.join(allowed)}, not {value!r}", name)
        for name in ("vocab_size", "n_layer", "n_embd", "n_head", "n_kv_head", "n_positions", "intermediate_size"):
            if not isinstance(getattr(a, name), int) or getattr(a, name) <= 0:
                raise invalid(f"{where}: architecture.{name} must be a positive integer", f"architecture.{name}")
        if a.n_head % a.n_kv_head:
            raise invalid(f"{where}: {a.n_head} heads do not split into {a.n_kv_head} key/value heads",
                          "architecture.n_kv_head")

    @classmethod
    def read(cls, folder: str | Path) -> "ModelSpec":
        path = Path(folder) / META
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise invalid(f"{folder}: no {META} (not a Glotta model folder)", "model") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise invalid(f"{path}: cannot read it ({e})", "glotta.json") from None
        return cls.from_json(data, str(path))

    def write(self, folder: str | Path) -> Path:
        """glotta.json, atomically."""
        self.check()
        path = Path(folder) / META
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")
        return path


def _field(data: dict, name: str, kind: type, where: str):
    if not isinstance(data.get(name), kind):
        raise invalid(f"{where}: `{name}` must be a {kind.__name__}", name)
    return data[name]


def _record(cls, data: Any, where: str, name: str):
    if not isinstance(data, dict):
        raise invalid(f"{where}: `{name}` must be an object", name)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise invalid(f"{where}: `{name}.{unknown[0]}` is not a field of the schema", f"{name}.{unknown[0]}")
    try:
        return cls(**data)
    except TypeError as e:  # a required field is missing
        raise invalid(f"{where}: `{name}`: {e}", name) from None


def _from_v1(data: dict, where: str) -> ModelSpec:
    """A glotta.json written before schema 2: a GPT-2 exchange export, or a fused graph with its `decoder` record."""
    known = {"name", "architecture", "vocab_size", "n_positions", "n_layer", "n_embd", "n_head", "eod_token",
             "bos_token", "decoder", "parameters", "source", "tokenizer"}
    try:
        if "decoder" in data:
            d = dict(data["decoder"])
            family = d.pop("family")
            arch = _traits(family, d)
            weights = "fused"
        else:
            from .registry import exchange_family

            e = data["n_embd"]
            family, weights = exchange_family().name, "exchange"
            arch = Architecture(vocab_size=data["vocab_size"], n_layer=data["n_layer"], n_embd=e,
                                n_head=data["n_head"], n_kv_head=data["n_head"], n_positions=data["n_positions"],
                                intermediate_size=4 * e)
    except (KeyError, TypeError) as e:
        raise invalid(f"{where}: a glotta.json without schema_version lacks {e}", str(e)) from None
    eod = data.get("eod_token", EOD_TOKEN)
    tok = TokenizerSpec(file=data.get("tokenizer", "tokenizer.json"), eos_tokens=(eod,),
                        bos_token=data.get("bos_token"))
    spec = ModelSpec(name=data.get("name") or Path(where).parent.name, family=family, architecture=arch,
                     tokenizer=tok, weights=weights, source=data.get("source"),
                     card={k: v for k, v in data.items() if k not in known})
    spec.check(where)
    return spec


def _traits(family: str, d: dict) -> Architecture:
    """A v1 `decoder` record (shape only) → the architecture, with the family's traits."""
    from .registry import get

    base = get(family).traits()
    return replace(base, vocab_size=d["vocab_size"], n_layer=d["n_layer"], n_embd=d["n_embd"], n_head=d["n_head"],
                   n_kv_head=d["n_kv_head"], n_positions=d["n_positions"], intermediate_size=d["intermediate_size"],
                   head_dim=d.get("head_dim", 0), norm_eps=d.get("norm_eps", base.norm_eps),
                   rope_theta=d.get("rope_theta", base.rope_theta), rope_scaling=d.get("rope_scaling"))
