"""The family registry: which family reads a Hugging Face config or a set of Megatron arguments, and each family's
adapters, in the spirit of vLLM's model registry and CTranslate2's `register_loader`.

A family is one module in `modeling/families/` that calls `register(Family(...))`; adding one is that file and its
tests — nothing outside `families/` names a family. A family maps its source formats onto the spec's traits
(`Architecture`) and names:

    traits()                          the family's Architecture with zero sizes (its fixed traits)
    from_hf_config(cfg) -> Architecture          config.json → traits and sizes; refuses what it cannot serve
    to_hf_config(arch, eos, bos) -> dict          the config.json `transformers` loads (export hf, TRT-LLM)
    matches_megatron(args) / from_megatron(args)  Megatron-LM's arguments → traits and sizes
    hf_weights(state, arch) -> canonical weights  Hugging Face tensor names → the decoder graph's names
    hf_state_from_megatron(merged, arch)          Megatron's canonical weights → Hugging Face names (torch)
    megatron_state(model) -> dict                 a `transformers` model → a checkpoint's `model` entry
    trtllm                                        TensorRT-LLM's model class, its examples folder and flags
    fastertransformer                             None, or why FasterTransformer cannot run it
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from glotta.core.errors import invalid

if TYPE_CHECKING:  # spec asks the registry about families at run time; the types are all registry needs
    from .spec import Architecture


@dataclass(frozen=True)
class TrtllmRecipe:
    """How TensorRT-LLM converts a family's Hugging Face folder."""

    model: str  # tensorrt_llm.models class: its from_hugging_face / quantize convert the folder
    options: tuple[tuple[str, str], ...] = ()  # keyword arguments it would otherwise guess (GPT's variant)


@dataclass(frozen=True)
class Family:
    name: str
    hf_architectures: tuple[str, ...]  # config.json `architectures` (and its model_type) this family reads
    hf_model_type: str
    traits: Callable[[], Architecture]
    from_hf_config: Callable[[dict], Architecture]
    to_hf_config: Callable[[Architecture, int | None, int | None], dict]
    matches_megatron: Callable[[Any], bool]
    from_megatron: Callable[[Any], Architecture]
    hf_weights: Callable[[dict, Architecture], dict]
    hf_state_from_megatron: Callable[[dict, Architecture], dict]
    megatron_state: Callable[[Any], dict]
    trtllm: TrtllmRecipe
    # transformers' tokenizer class for the family's model_type, and its special-token defaults (the class's
    # __init__), used where tokenizer_config.json names none
    hf_tokenizer: tuple[str, dict[str, str]] = ("", {})
    fastertransformer: str | None = None  # None: FasterTransformer's GPT runs it; else why it cannot
    description: str = ""
    exchange: bool = False  # the family of the exchange ONNX graphs (torch-exported, `past_key_values`)
    megatron_legacy: bool = False  # its checkpoints use Megatron-LM's legacy layout (else megatron-core's)


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.name in _FAMILIES:
        raise ValueError(f"family {family.name!r} is registered twice")
    _FAMILIES[family.name] = family
    return family


def _load() -> dict[str, Family]:
    if not _FAMILIES:
        importlib.import_module(f"{__package__}.families")
    return _FAMILIES


def names() -> list[str]:
    return sorted(_load())


def get(name: str, where: str = "family") -> Family:
    families = _load()
    if name not in families:
        raise invalid(f"{where}: family {name!r} is not one Glotta serves (families: {', '.join(sorted(families))})",
                      "family")
    return families[name]


def tokenizer_defaults(tokenizer_class: str | None, model_type: str | None) -> dict[str, str]:
    """The special tokens a transformers tokenizer class sets by default: the class tokenizer_config.json names, else
    the one AutoTokenizer picks for config.json's model_type (tokenization_auto.py's TOKENIZER_MAPPING)."""
    cls = (tokenizer_class or "").removesuffix("Fast")
    for f in _load().values():
        if f.hf_tokenizer[0] == cls or (not cls and f.hf_model_type == model_type):
            return dict(f.hf_tokenizer[1])
    return {}


def exchange_family() -> Family:
    """The family whose graphs the exchange ONNX format holds (a glotta.json from before schema 2 names none)."""
    return next(f for f in _load().values() if f.exchange)


def for_hf_config(cfg: dict) -> Family:
    """The family of a Hugging Face config.json (its `architectures`, else its `model_type`)."""
    families = _load().values()
    arch = (cfg.get("architectures") or [None])[0]
    for f in families:
        if arch in f.hf_architectures or (arch is None and cfg.get("model_type") == f.hf_model_type):
            return f
    supported = ", ".join(a for f in families for a in f.hf_architectures)
    raise invalid(f"architecture {arch or cfg.get('model_type')!r} is not supported (supported: {supported})",
                  "architectures")


def for_megatron(args: Any) -> Family:
    """The family Megatron-LM arguments describe; a mixture of traits no family has is refused with what is there."""
    for f in _load().values():
        if f.matches_megatron(args):
            return f
    described = "; ".join(f"{f.name} ({f.description})" for f in _load().values())
    raise ValueError(f"these Megatron arguments ({megatron_traits(args)}) describe none of the families Glotta "
                     f"serves: {described}")


def megatron_traits(args: Any) -> str:
    """The architecture options of Megatron arguments, in Megatron's own words (for messages)."""
    position = getattr(args, "position_embedding_type", "learned_absolute")
    if getattr(args, "use_rotary_position_embeddings", False):
        position = "rope"
    return (f"--position-embedding-type {position}, --normalization {getattr(args, 'normalization', 'LayerNorm')}, "
            f"swiglu {bool(getattr(args, 'swiglu', False))}, "
            f"add_bias_linear {bool(getattr(args, 'add_bias_linear', True))}, "
            f"add_qkv_bias {bool(getattr(args, 'add_qkv_bias', False))}")
