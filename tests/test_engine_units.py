"""Engine building blocks on their own: stop strings, incremental detokenization, sampling rules, KV batch."""

import numpy as np
import pytest

from glotta.core.tokenizer import Tokenizer
from glotta.server.engine.interface import SamplingParams, StopConditions
from glotta.server.engine.sampling import Sampler, log_softmax, top_logprobs
from glotta.server.engine.stopping import TextStopper
from glotta.server.engine.text_io import IncrementalDetokenizer

from .conftest import FR, REPO


def feed_all(stopper, pieces):
    return "".join(stopper.feed(p) for p in pieces) + ("" if stopper.stopped else stopper.flush())


@pytest.mark.parametrize(
    "stop,pieces,expected,stopped",
    [
        (StopConditions(stop_strings=("END",)), ["abc E", "N", "D tail"], "abc ", True),
        (StopConditions(stop_strings=("END",)), ["abc E", "Nx"], "abc ENx", False),
        (StopConditions(stop_strings=("xy", "b")), ["a", "bxy"], "a", True),
        (StopConditions(stop_on_eol=True), ["une ligne", "\nsuite"], "une ligne\n", True),
        (StopConditions(stop_on_double_eol=True), ["a\nb", "\n", "\nc"], "a\nb\n\n", True),
        (StopConditions(), ["a\n\nb"], "a\n\nb", False),
    ],
)
def test_text_stopper(stop, pieces, expected, stopped):
    s = TextStopper(stop)
    assert feed_all(s, pieces) == expected
    assert s.stopped is stopped


def test_stopper_holds_back_only_possible_prefixes():
    s = TextStopper(StopConditions(stop_strings=("STOP",)))
    assert s.feed("hello ST") == "hello "
    assert s.feed("X") == "STX"


def _reference_stop(stop: StopConditions, pieces: list[str]) -> tuple[str, bool]:
    """The rule, written the slow obvious way: after each piece, cut at the earliest marker found anywhere in the
    text so far (the stopper must never have released text that such a cut removes)."""
    markers = [(m, False) for m in stop.stop_strings if m]
    markers += [("\n\n", True)] if stop.stop_on_double_eol else [("\n", True)] if stop.stop_on_eol else []
    text = ""
    for piece in pieces:
        text += piece
        cuts = [i + (len(m) if keep else 0) for m, keep in markers if (i := text.find(m)) >= 0]
        if cuts:
            return text[:min(cuts)], True
    return text, False


def test_stopper_equals_the_obvious_rule_on_random_streams():
    """The automaton against `_reference_stop` on 20,000 random streams (overlapping markers, every split)."""
    rng = np.random.default_rng(0)
    alphabet = list("ab\nc")
    for _ in range(20_000):
        word = lambda n: "".join(rng.choice(alphabet, n))  # noqa: E731
        stop = StopConditions(stop_strings=tuple(word(rng.integers(0, 6)) for _ in range(rng.integers(0, 4))),
                              stop_on_eol=bool(rng.random() < 0.2), stop_on_double_eol=bool(rng.random() < 0.2))
        text = word(rng.integers(0, 30))
        cuts = sorted(set(rng.integers(0, len(text) + 1, rng.integers(0, 6)).tolist()) | {0, len(text)})
        pieces = [text[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]
        s = TextStopper(stop)
        released = []
        for piece in pieces:
            released.append(s.feed(piece))
            if s.stopped:
                break
        out = "".join(released) + ("" if s.stopped else s.flush())
        consumed = pieces[: len(released)]
        assert (out, s.stopped) == _reference_stop(stop, consumed), (stop, pieces)


@pytest.fixture(scope="module")
def tok():
    return Tokenizer(REPO / FR / "tokenizer.json")


def test_incremental_detokenizer_never_splits_characters(tok):
    text = "Où êtes-vous ? Ça dépend : œuvre, naïve, 東京, emoji 🙂 fin."
    ids = tok.encode(text)
    # byte-level BPE does split some of these characters over several tokens
    assert any("\ufffd" in tok.piece(i) for i in ids)
    d = IncrementalDetokenizer(tok)
    deltas = [d.add(i) for i in ids]
    assert all("\ufffd" not in x for x in deltas)
    assert "".join(deltas) + d.flush() == text


def test_byte_table_detokenizer_equals_the_tokenizers_decode(tok):
    """The byte-table fast path (byte-level BPE) against the tokenizer's own decode, on random token streams:
    arbitrary byte sequences (invalid UTF-8 included) and the special EOD token, skipped as decode skips it."""
    assert tok.token_bytes is not None  # the shipped tokenizers take the fast path
    rng = np.random.default_rng(0)
    for _ in range(200):
        ids = rng.integers(0, tok.vocab_size, size=int(rng.integers(1, 30))).tolist()
        if rng.random() < 0.3:
            ids.insert(int(rng.integers(0, len(ids))), tok.eod_id)
        d = IncrementalDetokenizer(tok)
        text = "".join(d.add(i) for i in ids) + d.flush()
        assert text == tok.decode(ids, skip_special=True), ids


def test_tokenizer_round_trip_and_eod(tok):
    text = "Le paquet « apt » gère les dépendances.\n\nFin"
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode([tok.eod_id]) == "<|endoftext|>"
    assert tok.encode("<|endoftext|>") == [tok.eod_id]


def test_greedy_and_top_k_and_top_p():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=200).astype(np.float32)
    order = np.argsort(-logits)
    assert Sampler(SamplingParams(top_k=1)).choose(logits) == order[0]
    assert Sampler(SamplingParams(temperature=0.0)).choose(logits) == order[0]
    s = Sampler(SamplingParams(top_k=3, seed=1))
    assert {s.choose(logits) for _ in range(300)} == set(order[:3].tolist())
    # top_p smaller than the best token's probability keeps only that token
    probs = np.exp(log_softmax(logits[None])[0])
    s = Sampler(SamplingParams(top_p=float(probs.max()) / 2, seed=1))
    assert {s.choose(logits) for _ in range(50)} == {order[0]}
    # a nucleus of 50% mass draws only from the smallest prefix reaching it
    cum = np.cumsum(probs[order])
    allowed = set(order[: int(np.searchsorted(cum, 0.5)) + 1].tolist())
    s = Sampler(SamplingParams(top_p=0.5, seed=2))
    drawn = {s.choose(logits) for _ in range(500)}
    assert drawn <= allowed and len(drawn) > 1


def test_seeded_sampler_is_reproducible_and_decays_top_p():
    logits = np.random.default_rng(1).normal(size=100).astype(np.float32)
    a = [Sampler(SamplingParams(seed=5)).choose(logits) for _ in range(3)]
    assert len(set(a)) == 1
    s = Sampler(SamplingParams(top_p=0.9, top_p_decay=0.5, top_p_bound=0.3, seed=0))
    for _ in range(4):
        s.choose(logits)
    assert s.top_p == pytest.approx(0.3)


def test_top_logprobs_sorted():
    lp = log_softmax(np.array([[1.0, 3.0, 2.0, 0.0]], np.float32))[0]
    assert [i for i, _ in top_logprobs(lp, 3)] == [1, 2, 0]
    assert np.exp(lp).sum() == pytest.approx(1.0)


def test_vanishing_temperature_is_greedy_and_degenerate_logits_do_not_crash():
    logits = np.random.default_rng(3).normal(size=50).astype(np.float32)
    assert Sampler(SamplingParams(temperature=5e-324, seed=1)).choose(logits) == int(np.argmax(logits))
    bad = np.full(50, -np.inf, np.float32)
    bad[7] = np.inf
    assert Sampler(SamplingParams(temperature=1.0, seed=1)).choose(bad) == 7
