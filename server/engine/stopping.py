"""Text-level stop conditions (stop strings, end of line), shared by every backend that streams text.

Megatron stops on GPT-2 token ids 198/628; tying the rule to one vocabulary is the TODO in its own source. Here the
rule is on text: the generation ends at the first newline (`stop_on_eol`, newline kept) or the first blank line
(`stop_on_double_eol`), or just before the first stop string (OpenAI semantics: the stop string is not returned).
Text that could still become a stop string is held back until it is decided.

Each marker is matched by a Knuth–Morris–Pratt automaton whose state (the longest prefix of the marker that ends the
text so far) carries over from one token to the next: a token costs its own characters times the markers, whatever
the length of the output or of the stop strings (which bounds.py caps anyway).
"""

from __future__ import annotations

from .interface import StopConditions


class _Marker:
    __slots__ = ("text", "keep", "fail", "state")

    def __init__(self, text: str, keep: bool) -> None:
        self.text, self.keep, self.state = text, keep, 0
        fail = [0] * len(text)  # fail[i]: longest proper prefix of text[:i + 1] that is also its suffix
        k = 0
        for i in range(1, len(text)):
            while k and text[i] != text[k]:
                k = fail[k - 1]
            if text[i] == text[k]:
                k += 1
            fail[i] = k
        self.fail = fail

    def feed(self, delta: str) -> int | None:
        """Advance over `delta`; the index in `delta` just past the first complete match, if any."""
        text, fail, k = self.text, self.fail, self.state
        for i, c in enumerate(delta):
            while k and c != text[k]:
                k = fail[k - 1]
            if c == text[k]:
                k += 1
                if k == len(text):
                    self.state = k
                    return i + 1
        self.state = k
        return None


class TextStopper:
    def __init__(self, stop: StopConditions) -> None:
        self.stop_strings = [s for s in stop.stop_strings if s]
        self.markers = [_Marker(s, False) for s in self.stop_strings]
        if stop.stop_on_double_eol:
            self.markers.append(_Marker("\n\n", True))
        elif stop.stop_on_eol:
            self.markers.append(_Marker("\n", True))
        self.text = ""  # all generated text seen so far
        self._released = 0
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Add new text; return what can be released now. Sets `stopped` once a stop condition is met."""
        if self.stopped or not delta:
            return ""
        base = len(self.text)
        self.text += delta
        best: int | None = None
        for m in self.markers:
            end = m.feed(delta)
            if end is not None:
                cut = base + end - (0 if m.keep else len(m.text))
                best = cut if best is None else min(best, cut)
        if best is not None:
            self.stopped = True
            out = self.text[self._released : best]
            self._released = best
            self.text = self.text[:best]
            return out
        held = max((m.state for m in self.markers), default=0)  # the tail that may still become a marker
        safe = max(len(self.text) - held, self._released)
        out = self.text[self._released : safe]
        self._released = safe
        return out

    def flush(self) -> str:
        """Release what was held back when the generation ends for another reason."""
        out = self.text[self._released :]
        self._released = len(self.text)
        return out
