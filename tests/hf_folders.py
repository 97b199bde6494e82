"""Hugging Face model folders written the way current `transformers` writes them — the model's `save_pretrained`
and its tokenizer's — with small tokenizers trained here on French and Spanish text, and random peaked weights."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["Il était une fois une tortue", "¿Dónde está la biblioteca municipal?", "Le noyau Linux démarre",
           "El perro duerme en el sofá", "Pour configurer le réseau, éditez"]


def training_texts() -> list[str]:
    """French and Spanish text shipped in the repository: the load-test prompts and the template library."""
    texts = [json.loads(line)["prompt"] for line in (REPO / "core" / "prompts.jsonl").read_text().splitlines() if line]
    for path in sorted((REPO / "server" / "templates" / "builtin").glob("*.yaml")):
        texts += [line.strip(" -\"'") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts


def bpe_tokenizer_json(style: str, specials: dict[int, str], bos: str | None = None, vocab_size: int = 700) -> dict:
    """A BPE trained here — byte-level (GPT-2, Qwen2) or Metaspace with byte fallback (Llama's SentencePiece form) —
    whose special tokens keep the ids `specials` gives (the trained vocabulary is padded up to high ids), with a
    post-processor that prepends `bos` or none."""
    tok = Tokenizer(models.BPE(byte_fallback=style == "metaspace"))
    if style == "bytelevel":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                      initial_alphabet=[f"<0x{b:02X}>" for b in range(256)])
    tok.train_from_iterator(training_texts(), trainer)
    data = json.loads(tok.to_str())
    base = next(k for k in range(len(specials) + 1) if k not in specials)  # specials 0..k-1 come first (Llama)
    vocab = {t: base + i for t, i in sorted(data["model"]["vocab"].items(), key=lambda kv: kv[1])}
    high = sorted(i for i in specials if i >= base)  # the others come after it (GPT-2, Qwen2), at their ids
    for k in range(base + len(vocab), high[0] if high else 0):
        vocab[f"<unused_{k}>"] = k
    vocab |= {c: i for i, c in specials.items()}
    data["model"]["vocab"] = vocab
    data["added_tokens"] = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True} for i, c in sorted(specials.items())]
    data["post_processor"] = None
    if bos is not None:
        b = {"SpecialToken": {"id": bos, "type_id": 0}}
        data["post_processor"] = {"type": "TemplateProcessing", "single": [b, {"Sequence": {"id": "A", "type_id": 0}}],
                                  "pair": [b, {"Sequence": {"id": "A", "type_id": 0}}, b,
                                           {"Sequence": {"id": "B", "type_id": 1}}],
                                  "special_tokens": {bos: {"id": bos, "ids": [vocab[bos]], "tokens": [bos]}}}
    return data


def peak(model, scale: float) -> None:
    """Larger random weights, biases included: greedy choices far from ties, text that wanders over many tokens."""
    import torch

    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, scale)
            elif name.endswith("bias"):
                p.normal_(0, 0.5)


def _tokenizer(kind: str):
    """The tokenizer a user's folder carries, as a `transformers` object (saved with the model)."""
    from transformers import GPT2Tokenizer, LlamaTokenizer, Qwen2Tokenizer

    if kind == "gpt2":  # the shipped French tokenizer, as GPT2Tokenizer wraps it
        return GPT2Tokenizer(tokenizer_object=Tokenizer.from_file(str(REPO / "model_repository" / "glotta-fr-tiny" /
                                                                       "tokenizer.json")),
                             bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    if kind == "qwen2":
        data = bpe_tokenizer_json("bytelevel", {700: "<|endoftext|>", 701: "<|im_start|>", 702: "<|im_end|>"})
        return Qwen2Tokenizer(tokenizer_object=Tokenizer.from_str(json.dumps(data)))
    bos = "<s>" if kind == "llama-bos" else None
    data = bpe_tokenizer_json("metaspace", {0: "<unk>", 1: "<s>", 2: "</s>"}, bos=bos)
    return LlamaTokenizer(tokenizer_object=Tokenizer.from_str(json.dumps(data)), bos_token="<s>", eos_token="</s>",
                          unk_token="<unk>")


def hf_folder(kind: str, path: Path):
    """(folder, model, tokenizer) of one of the four kinds: gpt2, llama, llama-bos (its tokenizer adds <s>), qwen2."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = _tokenizer(kind)
    n = len(tok)
    eos = tok.convert_tokens_to_ids(tok.eos_token)
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=n, n_positions=128, n_embd=64, n_layer=2, n_head=4,
                                           bos_token_id=eos, eos_token_id=eos))
    elif kind == "qwen2":
        # head size 32: one TensorRT-LLM's attention takes (tests/test_qwen2.py exports it)
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=n, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                                             tie_word_embeddings=True, eos_token_id=eos, bos_token_id=None,
                                             rope_theta=1000000.0))
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=n, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                             tie_word_embeddings=False, bos_token_id=1, eos_token_id=eos))
    model.eval()
    peak(model, 0.3)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path, model, tok


def hf_generate(model, ids: list[int], n: int) -> list[int]:
    """HF `generate`, greedy, up to n tokens, stopping where the folder's generation config says."""
    import torch

    cfg = copy.deepcopy(model.generation_config)
    cfg.do_sample, cfg.max_new_tokens, cfg.pad_token_id = False, n, cfg.eos_token_id
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             generation_config=cfg)
    return out[0, len(ids):].tolist()
