"""A Hugging Face folder's tokenizer, taken at its word: the prompt ids and special tokens `transformers` itself uses.

Prompt ids are what the folder's tokenizer.json produces with its own post-processor — the special tokens it adds
are observed by encoding, never inferred from the post-processor's class. That is transformers 5's rule
(tokenization_utils_base.py `_from_pretrained` drops tokenizer_config.json's `add_bos_token`/`add_eos_token` when a
tokenizer.json exists; tokenization_utils_tokenizers.py keeps the file's post-processor, and with none adds
nothing). transformers 4 let those flags rewrite a Llama's post-processor; where the flags and the tokenizer.json
disagree, Glotta follows the file and says so in a warning.

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

from .registry import tokenizer_defaults
from .spec import TokenizerSpec

log = logging.getLogger("glotta.modeling")
# every file that shapes how the served model tokenizes and stops (the conversion cache is keyed on all of them)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                   "chat_template.jinja", "chat_template.json")
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


def special_token_names(tcfg: dict, stmap: dict, model_type: str | None = None) -> dict[str, str | None]:
    """bos/eos/pad/unk names as transformers resolves them."""
    names = tokenizer_defaults(tcfg.get("tokenizer_class"), model_type)
    sources = [tcfg] if "added_tokens_decoder" in tcfg else [tcfg, stmap]  # the map overrides on the legacy path
    for source in sources:
        for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
            if key in source:
                names[key] = _content(source[key])
    return {k: names.get(k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}


def _vocab(tok: dict) -> dict[str, int]:
    vocab = dict(tok.get("model", {}).get("vocab") or {}) if isinstance(tok.get("model", {}).get("vocab"), dict) else {}
    if isinstance(tok.get("model", {}).get("vocab"), list):  # Unigram: [[piece, score], ...]
        vocab = {piece: i for i, (piece, _) in enumerate(tok["model"]["vocab"])}
    vocab |= {a["content"]: a["id"] for a in tok.get("added_tokens", [])}
    return vocab


def folder_token_names(folder: str | Path) -> dict[str, str | None] | None:
    """The special tokens' names a folder's tokenizer_config.json (and special_tokens_map.json) give, or None when it
    has neither file."""
    folder = Path(folder)
    tcfg, stmap = _read(folder / "tokenizer_config.json"), _read(folder / "special_tokens_map.json")
    if not tcfg and not stmap:
        return None
    return special_token_names(tcfg, stmap, _read(folder / "config.json").get("model_type"))


def _added_specials(tok: dict) -> tuple[list[int], list[int]]:
    """The ids tokenizer.json's post-processor puts before and after a prompt, seen by encoding one."""
    from tokenizers import Tokenizer

    try:
        t = Tokenizer.from_str(json.dumps(tok))
    except Exception:  # noqa: BLE001 — an unreadable tokenizer is refused where it is loaded, with its error
        return [], []
    plain, full = t.encode("a", add_special_tokens=False).ids, t.encode("a").ids
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return full[:i], full[i + len(plain):]
    return [], []


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
    names = special_token_names(tcfg, stmap, cfg.get("model_type"))
    vocab = _vocab(tok)
    by_id = {i: t for t, i in vocab.items()}
    warnings: list[str] = []

    before, after = _added_specials(tok)
    for flag, ids, token in (("add_bos_token", before[:1], names["bos_token"]),
                             ("add_eos_token", after[-1:], names["eos_token"])):
        adds = bool(ids) if token is None else token in vocab and ids == [vocab[token]]
        if flag in tcfg and bool(tcfg[flag]) != adds:
            warnings.append(f"tokenizer_config.json sets {flag} {str(bool(tcfg[flag])).lower()} but tokenizer.json "
                            f"{'adds' if adds else 'does not add'} {token or 'one'!r}: prompts follow tokenizer.json, "
                            f"as transformers ≥ 5 does")

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
