"""`glotta data convert`: JSONL → Megatron `PREFIX_{key}_document.bin/.idx`, the job of `tools/preprocess_data.py`.

Input streams through in chunks of lines, so memory stays bounded whatever the corpus size. Worker processes
tokenize chunks — with tiktoken's encoder on the same GPT-2 BPE when the vocab/merges files allow it exactly (see
fast_bpe.py), else with Hugging Face `tokenizers` — and the parent writes them in input order. A literal
`<|endoftext|>` in raw text is removed, so only `--append-eod` ever puts an EOD in the data. Malformed lines (bad
JSON, missing key, invalid UTF-8) are skipped, counted and reported with their file and line.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Iterator

import numpy as np

from glotta.core.megatron.indexed import DatasetWriter
from glotta.core.tokenizer import EOD_TOKEN

_state: dict = {}


@dataclass
class ConvertReport:
    documents: int = 0
    tokens: int = 0
    bad_lines: list[tuple[str, int, str]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def load_tokenizer(vocab_file: str | None = None, merge_file: str | None = None, tokenizer_json: str | None = None):
    """GPT-2 byte-level BPE from Megatron's vocab.json + merges.txt (or a tokenizers JSON file)."""
    from tokenizers import Tokenizer
    from tokenizers.implementations import ByteLevelBPETokenizer

    if tokenizer_json:
        return Tokenizer.from_file(str(tokenizer_json))
    if not (vocab_file and merge_file):
        raise ValueError("give --vocab-file and --merge-file (or --tokenizer-json)")
    return ByteLevelBPETokenizer(str(vocab_file), str(merge_file), add_prefix_space=False)


def input_files(patterns: list[str]) -> list[str]:
    from .data.records import expand

    return [str(p) for p in expand(patterns)]


def iter_chunks(files: list[str], lines_per_chunk: int) -> Iterator[list[tuple[str, int, bytes]]]:
    chunk = []
    for path in files:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            for line_no, raw in enumerate(f, 1):
                if raw.strip():
                    chunk.append((path, line_no, raw))
                if len(chunk) >= lines_per_chunk:
                    yield chunk
                    chunk = []
    if chunk:
        yield chunk


def _init(tokenizer_args: tuple, keys: list[str], append_eod: bool, threads: int | None) -> None:
    from .fast_bpe import load as load_fast

    if threads == 1:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker process
    tok = load_tokenizer(*tokenizer_args)
    eod = tok.token_to_id(EOD_TOKEN)
    if append_eod and eod is None:
        raise ValueError(f"--append-eod: the vocabulary has no {EOD_TOKEN}")
    vocab_file, merge_file, tokenizer_json = tokenizer_args
    fast = load_fast(vocab_file, merge_file) if vocab_file and merge_file and not tokenizer_json else None
    encode = (lambda texts: [fast.encode_ordinary(t) for t in texts]) if fast else (
        lambda texts: [e.ids for e in tok.encode_batch(texts)])
    _state.update(encode=encode, keys=keys, eod=eod, append_eod=append_eod)


def _tokenize(chunk: list[tuple[str, int, bytes]]) -> tuple[dict, list[tuple[str, int, str]], int]:
    """One chunk → per key (flat token array, lengths), the lines that could not be used, and its size in bytes."""
    keys, bad = _state["keys"], []
    texts: dict[str, list[str]] = {k: [] for k in keys}
    for path, line_no, raw in chunk:
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            bad.append((path, line_no, f"invalid UTF-8 at byte {e.start}"))
            continue
        except json.JSONDecodeError as e:
            bad.append((path, line_no, f"invalid JSON: {e.msg}"))
            continue
        if not isinstance(record, dict) or any(not isinstance(record.get(k), str) for k in keys):
            missing = next(k for k in keys if not isinstance(record, dict) or not isinstance(record.get(k), str))
            bad.append((path, line_no, f"missing or non-string key {missing!r}"))
            continue
        for k in keys:
            texts[k].append(record[k].replace(EOD_TOKEN, ""))
    out = {}
    for k in keys:
        encoded = _state["encode"](texts[k]) if texts[k] else []
        if _state["append_eod"]:
            for ids in encoded:
                ids.append(_state["eod"])
        lengths = np.fromiter((len(ids) for ids in encoded), np.int32, len(encoded))
        flat = np.fromiter(itertools.chain.from_iterable(encoded), np.int64, int(lengths.sum()))
        out[k] = (flat, lengths)
    return out, bad, sum(len(raw) for _, _, raw in chunk)


def convert(inputs: list[str], output_prefix: str, vocab_file: str | None = None, merge_file: str | None = None,
            tokenizer_json: str | None = None, json_keys: tuple[str, ...] = ("text",), append_eod: bool = False,
            workers: int | None = None, lines_per_chunk: int = 1000, progress: bool | None = None) -> ConvertReport:
    from glotta.core.progress import bar as progress_bar

    files = input_files(inputs)
    tok_args = (vocab_file, merge_file, tokenizer_json)
    vocab_size = load_tokenizer(*tok_args).get_vocab_size()
    writers = {k: DatasetWriter(f"{output_prefix}_{k}_document", vocab_size) for k in json_keys}
    workers = workers or os.cpu_count() or 1
    report = ConvertReport()
    total = None if any(f.endswith(".gz") for f in files) else sum(os.path.getsize(f) for f in files)
    bar = progress_bar(progress, total=total, unit="B", unit_scale=True, desc="convert (input bytes)")
    chunks = iter_chunks(files, lines_per_chunk)
    if workers == 1:
        _init(tok_args, list(json_keys), append_eod, 1)
        results = map(_tokenize, chunks)
        pool = None
    else:
        pool = get_context("spawn").Pool(workers, _init, (tok_args, list(json_keys), append_eod, 1))
        results = pool.imap(_tokenize, chunks)  # in input order; the pool keeps only a few chunks in flight
    try:
        for out, bad, nbytes in results:
            for k, (flat, lengths) in out.items():
                writers[k].add_documents(flat, lengths)
            report.bad_lines += bad
            bar.update(nbytes)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        bar.close()
    for k, w in writers.items():
        w.finalize()
        report.outputs.append(str(w.prefix))
    report.documents = writers[json_keys[0]].documents
    report.tokens = sum(w.tokens for w in writers.values())
    return report
