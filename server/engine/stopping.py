"""Text-level stop conditions (stop strings, end of line), shared by every backend that streams text.

Megatron stops on GPT-2 token ids 198/628; tying the rule to one vocabulary is the TODO in its own source. Here the
rule is on text: the generation ends at the first newline (`stop_on_eol`, newline kept) or the first blank line
(`stop_on_double_eol`), or just before the first stop string (OpenAI semantics: the stop string is not returned).
Text that could still become a stop string is held back until it is decided.
"""

from __future__ import annotations

from .protocol import StopConditions


class TextStopper:
    def __init__(self, stop: StopConditions) -> None:
        self.stop_strings = [s for s in stop.stop_strings if s]
        self.markers: list[tuple[str, bool]] = [(s, False) for s in self.stop_strings]
        if stop.stop_on_double_eol:
            self.markers.append(("\n\n", True))
        elif stop.stop_on_eol:
            self.markers.append(("\n", True))
        self._hold = max((len(m) for m, _ in self.markers), default=0) - 1
        self.text = ""  # all generated text seen so far
        self._released = 0
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Add new text; return what can be released now. Sets `stopped` once a stop condition is met."""
        if self.stopped or not delta:
            return ""
        search_from = max(0, self._released - self._hold)
        self.text += delta
        best: int | None = None
        for marker, keep in self.markers:
            i = self.text.find(marker, search_from)
            if i >= 0:
                end = i + len(marker) if keep else i
                best = end if best is None else min(best, end)
        if best is not None:
            self.stopped = True
            out = self.text[self._released : best]
            self._released = best
            self.text = self.text[:best]
            return out
        safe = len(self.text) - self._partial_suffix()
        out = self.text[self._released : max(safe, self._released)]
        self._released = max(safe, self._released)
        return out

    def flush(self) -> str:
        """Release what was held back when the generation ends for another reason."""
        out = self.text[self._released :]
        self._released = len(self.text)
        return out

    def _partial_suffix(self) -> int:
        """Length of the longest tail of `text` that is a proper prefix of some marker."""
        best = 0
        for marker, _ in self.markers:
            for n in range(min(len(marker) - 1, len(self.text)), best, -1):
                if self.text.endswith(marker[:n]):
                    best = n
                    break
        return best
