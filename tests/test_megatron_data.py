"""Tokenizer training and Megatron .bin/.idx conversion, against megatron-core and transformers themselves."""

import json
import subprocess
import sys

import numpy as np
import pytest

from glotta.core.megatron.indexed import DatasetWriter, MegatronDataset, merge
from glotta.training.convert import convert

from .conftest import REPO

WORDS = ("le la les un une des système fichier paquet noyau réseau serveur disque mémoire installer configurer "
         "démarrer utiliser vérifier modifier après avant avec sans pour dans sur sous très bien").split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small generated JSONL corpus (fr-like), with a held-out-able size."""
    d = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    with (d / "a.jsonl").open("w", encoding="utf-8") as f:
        for i in range(400):
            text = " ".join(rng.choice(WORDS, rng.integers(5, 60))).capitalize() + "."
            f.write(json.dumps({"text": text, "id": i}, ensure_ascii=False) + "\n")
    return d / "a.jsonl"


@pytest.fixture(scope="module")
def tok_dir(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "tokenizer", "train", "--input", str(corpus),
                        "--vocab-size", "400", "--output", str(out), "--heldout-fraction", "0.1",
                        "--baseline", str(REPO / "glotta-fr-tiny")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "tokens/word" in r.stdout and "the baseline needs" in r.stdout
    return out


def _megatron_write(prefix, docs, vocab_size):
    import torch
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    b = IndexedDatasetBuilder(f"{prefix}.bin", dtype=DType.optimal_dtype(vocab_size))
    for ids in docs:
        b.add_item(torch.tensor(ids, dtype=torch.int64))
        b.end_document()
    b.finalize(f"{prefix}.idx")


@pytest.mark.parametrize("vocab_size,code", [(50257, 8), (70000, 4)])
def test_byte_identical_to_megatron_core(tmp_path, vocab_size, code):
    rng = np.random.default_rng(1)
    docs = [rng.integers(0, vocab_size, rng.integers(0, 50)).tolist() for _ in range(30)] + [[]]
    w = DatasetWriter(tmp_path / "ours", vocab_size)
    for d in docs:
        w.add_document(d)
    w.finalize()
    _megatron_write(tmp_path / "theirs", docs, vocab_size)
    for ext in ("bin", "idx"):
        assert (tmp_path / f"ours.{ext}").read_bytes() == (tmp_path / f"theirs.{ext}").read_bytes(), ext
    assert (tmp_path / "ours.idx").read_bytes()[17] == code

    from megatron.core.datasets.indexed_dataset import IndexedDataset

    theirs = IndexedDataset(str(tmp_path / "ours"))
    assert len(theirs) == len(docs)
    for i, d in enumerate(docs):
        assert theirs[i].tolist() == d == MegatronDataset(tmp_path / "ours")[i].tolist()


def test_round_trip_and_transformers_loads_the_files(corpus, tok_dir, tmp_path):
    from transformers import GPT2TokenizerFast

    report = convert([str(corpus)], str(tmp_path / "c"), str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"),
                     append_eod=True, workers=1, progress=False)
    assert report.documents == 400 and not report.bad_lines
    ds = MegatronDataset(tmp_path / "c_text_document")
    only_bpe = tmp_path / "gpt2-files"  # Megatron's two files, without tokenizer.json
    only_bpe.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (only_bpe / name).write_bytes((tok_dir / name).read_bytes())
    hf = GPT2TokenizerFast.from_pretrained(str(only_bpe))
    eod = hf.convert_tokens_to_ids("<|endoftext|>")
    lines = [json.loads(x)["text"] for x in corpus.read_text(encoding="utf-8").splitlines()]
    for i in (0, 7, 399):
        ids = ds[i].tolist()
        assert ids[-1] == eod and eod not in ids[:-1]
        assert ids[:-1] == hf.encode(lines[i])
        assert hf.decode(ids[:-1]) == lines[i]
    assert ds.num_tokens == report.tokens


def test_workers_give_identical_files_and_shards_merge(corpus, tok_dir, tmp_path):
    args = dict(vocab_file=str(tok_dir / "vocab.json"), merge_file=str(tok_dir / "merges.txt"), append_eod=True,
                progress=False)
    convert([str(corpus)], str(tmp_path / "one"), workers=1, **args)
    convert([str(corpus)], str(tmp_path / "two"), workers=2, lines_per_chunk=37, **args)
    for ext in ("bin", "idx"):
        assert (tmp_path / f"one_text_document.{ext}").read_bytes() == (tmp_path / f"two_text_document.{ext}").read_bytes()
    lines = corpus.read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "p1.jsonl").write_text("".join(lines[:150]), encoding="utf-8")
    (tmp_path / "p2.jsonl").write_text("".join(lines[150:]), encoding="utf-8")
    convert([str(tmp_path / "p1.jsonl")], str(tmp_path / "s1"), workers=1, **args)
    convert([str(tmp_path / "p2.jsonl")], str(tmp_path / "s2"), workers=1, **args)
    merge([tmp_path / "s1_text_document", tmp_path / "s2_text_document"], tmp_path / "merged")
    for ext in ("bin", "idx"):
        assert (tmp_path / f"merged.{ext}").read_bytes() == (tmp_path / f"one_text_document.{ext}").read_bytes()


def test_literal_eod_is_stripped_and_malformed_lines_reported(tok_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        b'{"text": "le paquet <|endoftext|> le noyau"}\n'
        b'{"text": "bien"\n'
        b'{"other": "x"}\n'
        b'{"text": "caf\xff"}\n'
        b'{"text": 42}\n'
        b'{"text": "le serveur"}\n'
    )
    r = convert([str(src)], str(tmp_path / "o"), str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"),
                append_eod=True, workers=1, progress=False)
    assert r.documents == 2
    assert [(line, reason.split(":")[0].split(" at")[0]) for _, line, reason in r.bad_lines] == [
        (2, "invalid JSON"), (3, "missing or non-string key 'text'"), (4, "invalid UTF-8"),
        (5, "missing or non-string key 'text'")]
    assert all(path == str(src) for path, _, _ in r.bad_lines)
    ds = MegatronDataset(tmp_path / "o_text_document")
    from glotta.training.tokenizer_training import load_any

    tok = load_any(tok_dir)
    eod = tok.token_to_id("<|endoftext|>")
    assert ds[0].tolist().count(eod) == 1 and tok.decode(ds[0].tolist()[:-1]) == "le paquet  le noyau"


def test_cli_convert_and_inspect(corpus, tok_dir, tmp_path):
    prefix = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "data", "convert", "--input", str(corpus),
                        "--output-prefix", str(prefix), "--vocab-file", str(tok_dir / "vocab.json"),
                        "--merge-file", str(tok_dir / "merges.txt"), "--append-eod", "--workers", "2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "data", "inspect", f"{prefix}_text_document",
                        "--doc", "5", "--tokenizer", str(tok_dir)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "400 documents" in r.stdout
    line5 = json.loads(corpus.read_text(encoding="utf-8").splitlines()[5])["text"]
    assert line5[:30] in r.stdout.replace("\n", " ")
    r = subprocess.run([sys.executable, "-m", "glotta.cli", "data", "inspect", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "nope" in r.stderr and "Traceback" not in r.stderr


def test_fertility_report_against_a_baseline(tok_dir):
    report = json.loads((tok_dir / "fertility.json").read_text())
    assert report["vocab_size"] == 400 and report["heldout_documents"] > 0
    assert 0 < report["trained"]["tokens_per_word"] < 10
    base = report["baseline"]
    assert base["path"].endswith("glotta-fr-tiny") and base["tokens"] > 0 and base["tokens_per_char"] > 0


def test_fast_encoder_equals_tokenizers_exactly(tok_dir):
    from glotta.training.fast_bpe import load
    from glotta.training.tokenizer_training import load_any

    fast = load(tok_dir / "vocab.json", tok_dir / "merges.txt")
    assert fast is not None
    ref = load_any(tok_dir)
    texts = ["Le noyau démarre.", "  deux  espaces\n\nretours\tet tabulations ", "Ça coûte 12,50 € — vraiment ?",
             "emoji 🙂 et 東京 et l'apostrophe's", "nombres 1234567 et ponctuation !!!...", ""]
    for t in texts:
        assert fast.encode_ordinary(t) == ref.encode(t).ids, t


def test_fast_encoder_refuses_inconsistent_ranks(tok_dir, tmp_path):
    from glotta.training.fast_bpe import load

    merges = (tok_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    header, rules = merges[:1], merges[1:]
    (tmp_path / "merges.txt").write_text("\n".join(header + rules[1:2] + rules[:1] + rules[2:]), encoding="utf-8")
    assert load(tok_dir / "vocab.json", tmp_path / "merges.txt") is None
