"""A Hugging Face folder's tokenizer, taken at its word: the prompt ids and special tokens `transformers` itself uses.

Prompt ids are what the folder's tokenizer produces with its own post-processor — never a BOS inferred from the
post-processor's class. Where `transformers` replaces that post-processor, so does Glotta, by its rule
(transformers/tokenization_utils_tokenizers.py, `TokenizersBackend.__init__` and `update_post_processor`): when
tokenizer_config.json sets `add_bos_token` or `add_eos_token`, or tokenizer.json has no post-processor, prompts get
`[bos] $A [eos]` as those flags say (both off unless set). The served folder's tokenizer.json is written with that
effective post-processor, so the engine encodes with the tokenizer's own special tokens and nothing else.

The special tokens' names, in transformers' order of precedence (tokenization_utils_base.py `_from_pretrained`):
tokenizer_config.json, or special_tokens_map.json where the config has no `added_tokens_decoder` (its legacy path),
else the tokenizer class's defaults. Generation stops where `generate` stops: generation_config.json's
`eos_token_id` (an id or a list), else config.json's; ids outside the vocabulary are dropped. A folder that names no
usable end token falls back to the tokenizer's `eos_token`, and with none at all it still serves — generation then
stops at the length asked for — with a warning.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from glotta.core.errors import invalid

from .spec import TokenizerSpec

log = logging.getLogger("glotta.modeling")
# every file that shapes how the served model tokenizes and stops (the conversion cache is keyed on all of them)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                   "chat_template.jinja", "chat_template.json")
# the tokenizer classes' own defaults (transformers 5: models/gpt2/tokenization_gpt2.py, models/llama/
# tokenization_llama.py, models/qwen2/tokenization_qwen2.py), used when tokenizer_config.json names none
CLASS_DEFAULTS = {
    "GPT2Tokenizer": {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
    "LlamaTokenizer": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "Qwen2Tokenizer": {"eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"},
}


@dataclass
class ResolvedTokenizer:
    tokenizer_json: dict  # with the post-processor transformers would use
    spec: TokenizerSpec
    warnings: list[str] = field(default_factory=list)


def _read(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise invalid(f"{path}: cannot read it ({e})", path.name) from None
    return data if isinstance(data, dict) else {}


def _content(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def special_token_names(tcfg: dict, stmap: dict) -> dict[str, str | None]:
    """bos/eos/pad/unk names as transformers resolves them."""
    cls = (tcfg.get("tokenizer_class") or "").removesuffix("Fast")
    names = dict(CLASS_DEFAULTS.get(cls, {}))
    sources = [tcfg] if "added_tokens_decoder" in tcfg else [tcfg, stmap]  # the map overrides on the legacy path
    for source in sources:
        for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
            if key in source:
                names[key] = _content(source[key])
    return {k: names.get(k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}


def _template(bos: str | None, eos: str | None, vocab: dict[str, int]) -> dict:
    """transformers' `update_post_processor` template, in tokenizer.json's form."""
    single, pair, specials = [], [], {}
    for token, where in ((bos, "bos"), (eos, "eos")):
        if token is not None:
            specials[token] = {"id": token, "ids": [vocab[token]], "tokens": [token]}
    if bos:
        single.append({"SpecialToken": {"id": bos, "type_id": 0}})
    single.append({"Sequence": {"id": "A", "type_id": 0}})
    if eos:
        single.append({"SpecialToken": {"id": eos, "type_id": 0}})
    pair = [*single, *([{"SpecialToken": {"id": bos, "type_id": 1}}] if bos else []),
            {"Sequence": {"id": "B", "type_id": 1}}, *([{"SpecialToken": {"id": eos, "type_id": 1}}] if eos else [])]
    return {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials}


def _vocab(tok: dict) -> dict[str, int]:
    vocab = dict(tok.get("model", {}).get("vocab") or {}) if isinstance(tok.get("model", {}).get("vocab"), dict) else {}
    if isinstance(tok.get("model", {}).get("vocab"), list):  # Unigram: [[piece, score], ...]
        vocab = {piece: i for i, (piece, _) in enumerate(tok["model"]["vocab"])}
    vocab |= {a["content"]: a["id"] for a in tok.get("added_tokens", [])}
    return vocab


def _eos_ids(cfg: dict, gcfg: dict) -> tuple[list[int], str]:
    source = "generation_config.json" if "eos_token_id" in gcfg else "config.json"
    value = gcfg.get("eos_token_id", cfg.get("eos_token_id"))
    ids = value if isinstance(value, list) else [] if value is None else [value]
    return [i for i in ids if isinstance(i, int) and not isinstance(i, bool)], source


def resolve(folder: str | Path, cfg: dict | None = None) -> ResolvedTokenizer:
    """The effective tokenizer.json and the special tokens of a Hugging Face folder (`cfg`: its config.json)."""
    folder = Path(folder)
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise invalid(f"{folder}: no tokenizer.json next to the weights (save the tokenizer with the model: "
                      "`AutoTokenizer.save_pretrained`)", "tokenizer")
    tok = _read(path)
    tcfg, stmap = _read(folder / "tokenizer_config.json"), _read(folder / "special_tokens_map.json")
    cfg = cfg if cfg is not None else _read(folder / "config.json")
    gcfg = _read(folder / "generation_config.json")
    names = special_token_names(tcfg, stmap)
    vocab, by_id = _vocab(tok), {}
    by_id = {i: t for t, i in vocab.items()}
    warnings: list[str] = []

    add_bos, add_eos = bool(tcfg.get("add_bos_token", False)), bool(tcfg.get("add_eos_token", False))
    if "add_bos_token" in tcfg or "add_eos_token" in tcfg or tok.get("post_processor") is None:
        bos = names["bos_token"] if add_bos and names["bos_token"] in vocab else None
        eos = names["eos_token"] if add_eos and names["eos_token"] in vocab else None
        tok = {**tok, "post_processor": _template(bos, eos, vocab)}

    ids, source = _eos_ids(cfg, gcfg)
    eos_tokens = [by_id[i] for i in ids if i in by_id]
    if len(eos_tokens) < len(ids):
        warnings.append(f"{source} eos_token_id {ids} names ids outside the vocabulary: those are dropped")
    if not eos_tokens and names["eos_token"] in vocab:
        eos_tokens = [names["eos_token"]]
        warnings.append(f"no usable eos_token_id in generation_config.json or config.json: generation stops at the "
                        f"tokenizer's eos_token {names['eos_token']!r}")
    if not eos_tokens:
        warnings.append("no end token (generation_config.json, config.json, tokenizer_config.json): generation "
                        "stops at the length asked for")
    spec = TokenizerSpec(eos_tokens=tuple(dict.fromkeys(eos_tokens)), bos_token=names["bos_token"],
                         pad_token=names["pad_token"])
    for w in warnings:
        log.warning("%s: %s", folder, w)
    return ResolvedTokenizer(tok, spec, warnings)
