"""Tokenizers taken at their word, checked against `transformers` itself: the special tokens and prompt ids of
public models' tokenizer configs (tests/fixtures/public_configs), and of folders current `transformers` writes."""

import json
import shutil

import pytest
from transformers import AutoTokenizer, GenerationConfig

from glotta.core.tokenizer import Tokenizer
from glotta.modeling.hf_folder import cache_key, cached_hf_model, hf_spec
from glotta.modeling.special_tokens import resolve

from .conftest import ROOT
from .hf_folders import PROMPTS, bpe_tokenizer_json, hf_folder

FIXTURES = ROOT / "tests" / "fixtures" / "public_configs"
# the tokenizer.json form each public model's family ships: Qwen2's byte-level BPE; a Llama's SentencePiece BPE
# whose post-processor prepends <s> (as Llama tokenizer.json files do)
PUBLIC = {"qwen2.5-0.5b-instruct": "bytelevel", "salamandra-2b-instruct": "metaspace",
          "tucano-2b4-instruct": "metaspace"}


def _public_folder(name: str, tmp_path):
    folder = tmp_path / name
    shutil.copytree(FIXTURES / name, folder)
    tcfg = json.loads((folder / "tokenizer_config.json").read_text())
    specials = {int(i): t["content"] for i, t in tcfg["added_tokens_decoder"].items()}
    style = PUBLIC[name]
    data = bpe_tokenizer_json(style, specials, bos="<s>" if style == "metaspace" else None)
    (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    return folder


def _glotta_tokenizer(folder, tmp_path) -> Tokenizer:
    resolved = resolve(folder)
    path = tmp_path / "effective-tokenizer.json"
    path.write_text(json.dumps(resolved.tokenizer_json, ensure_ascii=False))
    return Tokenizer(path, resolved.spec.eos_tokens), resolved


def _assert_same_as_transformers(folder, tmp_path) -> None:
    hf = AutoTokenizer.from_pretrained(folder)
    glotta, resolved = _glotta_tokenizer(folder, tmp_path)
    assert (resolved.spec.bos_token, resolved.spec.pad_token) == (hf.bos_token, hf.pad_token)
    # generation ends where `generate` ends: generation_config.json (else config.json), else the tokenizer's eos
    if (folder / "generation_config.json").is_file() or (folder / "config.json").is_file():
        expected = GenerationConfig.from_pretrained(folder).eos_token_id
    else:
        expected = hf.eos_token_id
    expected = [] if expected is None else expected if isinstance(expected, list) else [expected]
    assert sorted(glotta.stop_ids) == sorted(expected)
    for prompt in PROMPTS:
        assert glotta.encode(prompt, special=True) == hf(prompt)["input_ids"], prompt
        assert glotta.encode(prompt) == hf(prompt, add_special_tokens=False)["input_ids"], prompt


@pytest.mark.parametrize("name", PUBLIC)
def test_public_tokenizer_configs_resolve_as_transformers_does(name, tmp_path):
    _assert_same_as_transformers(_public_folder(name, tmp_path), tmp_path)


def test_the_rules_are_observed_not_assumed(tmp_path):
    """What the three public configs say, spelled out: Qwen2.5 stops at <|im_end|> (generation_config) and adds no
    BOS; Tucano's tokenizer_config says add_bos_token false while its tokenizer.json adds <s> — transformers ≥ 5 (and
    Glotta) follow tokenizer.json, and Glotta says so."""
    qwen, resolved = _glotta_tokenizer(_public_folder("qwen2.5-0.5b-instruct", tmp_path), tmp_path)
    assert resolved.spec.eos_tokens == ("<|im_end|>",) and qwen.stop_ids == {151645}
    assert qwen.encode("Bonjour", special=True) == qwen.encode("Bonjour")
    tucano, resolved = _glotta_tokenizer(_public_folder("tucano-2b4-instruct", tmp_path), tmp_path)
    assert tucano.encode("Olá", special=True)[0] == 1
    assert any("add_bos_token false but tokenizer.json adds '<s>'" in w for w in resolved.warnings)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "llama-bos", "qwen2"])
def test_folders_written_by_current_transformers(kind, tmp_path):
    folder, _, _ = hf_folder(kind, tmp_path / kind)
    _assert_same_as_transformers(folder, tmp_path)
    spec, _, _ = hf_spec(folder, kind)
    ids = AutoTokenizer.from_pretrained(folder)(PROMPTS[0])["input_ids"]
    if kind == "gpt2":  # save_pretrained's TemplateProcessing `$A`: no stray <|endoftext|> before the prompt
        assert json.loads((folder / "tokenizer.json").read_text())["post_processor"]["type"] == "TemplateProcessing"
        assert ids[0] != 0 and spec.tokenizer.eos_tokens == ("<|endoftext|>",)
    assert (ids[0] == 1) == (kind == "llama-bos")


def test_tokenizer_json_only_folder_takes_its_class_defaults(tmp_path):
    """A folder with config.json and tokenizer.json alone: AutoTokenizer picks the class from model_type, and its
    defaults name the special tokens — so does Glotta."""
    folder, _, _ = hf_folder("gpt2", tmp_path / "gpt2")
    (folder / "tokenizer_config.json").unlink()
    _assert_same_as_transformers(folder, tmp_path)
    assert resolve(folder).spec.bos_token == "<|endoftext|>"


def test_a_folder_without_an_end_token_serves_with_a_warning(tmp_path):
    folder, _, _ = hf_folder("llama", tmp_path / "llama")
    for name in ("config.json", "generation_config.json"):
        data = json.loads((folder / name).read_text())
        data.pop("eos_token_id", None)
        (folder / name).write_text(json.dumps(data))
    tcfg = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**tcfg, "tokenizer_class": "PreTrainedTokenizerFast",
                                                              "eos_token": None}))
    resolved = resolve(folder)
    assert resolved.spec.eos_tokens == () and any("stops at the length asked for" in w for w in resolved.warnings)
    spec, _, _ = hf_spec(folder, "no-eos")
    assert spec.tokenizer.eos_tokens == ()


def test_the_conversion_cache_is_keyed_on_the_tokenizer_files(tmp_path, monkeypatch):
    """A user who fixes their tokenizer config is served the fixed conversion, not the cached old one."""
    monkeypatch.setenv("GLOTTA_CACHE", str(tmp_path / "cache"))
    folder, _, _ = hf_folder("llama", tmp_path / "llama")
    before = cached_hf_model(folder)
    key = cache_key(folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    b = {"SpecialToken": {"id": "<s>", "type_id": 0}}
    data["post_processor"] = {"type": "TemplateProcessing", "single": [b, {"Sequence": {"id": "A", "type_id": 0}}],
                              "pair": [b, {"Sequence": {"id": "A", "type_id": 0}}],
                              "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    (folder / "tokenizer.json").write_text(json.dumps(data))
    assert cache_key(folder) != key
    after = cached_hf_model(folder)
    assert after != before
    assert Tokenizer(after / "tokenizer.json", None).encode("Bonjour", special=True)[0] == 1
    fixed = cache_key(folder)
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": 2, "max_new_tokens": 5}))
    assert cache_key(folder) not in (key, fixed)
