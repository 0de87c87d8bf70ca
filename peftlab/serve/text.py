"""Generated token ids -> released text: incremental decoding and stop strings, in time linear in the text.

Both pieces are hand-written because the maintained ones fall short here: transformers'
`TextStreamer` re-decodes the whole answer at every token (quadratic), and its `stop_strings`
criterion only ends generation, it does not cut the text or hold back a stop string's first
characters from a stream. tokenizers' `decoders.DecodeStream` (which vLLM uses) was tried in place of
IncrementalDecoder (tokenizers 0.23.3, 260 token sequences of the test tokenizer): the text was identical
except on the 77 sequences ending inside a multi-byte character, where DecodeStream, which has no flush,
drops the incomplete character that a full decode (what an answer must equal) shows as U+FFFD. It also
needs a Rust-backed tokenizer, which slow tokenizers lack. So ours stays.
"""

from __future__ import annotations

from typing import Any


class IncrementalDecoder:
    """Decodes one token at a time by re-decoding only a short window (the method of TGI and vLLM).

    The window starts at the token before the last released text, so a tokenizer that treats the
    first token of a decode specially (dropping a leading space) does so to that token only.
    Text ending in U+FFFD is a multi-byte character still incomplete: it waits for more tokens.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0  # the window's first token
        self.read_offset = 0  # tokens before this are released

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self._decode(self.ids[self.prefix_offset:self.read_offset])
        now = self._decode(self.ids[self.prefix_offset:])
        if len(now) <= len(before) or now.endswith("\ufffd"):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return now[len(before):]

    def flush(self) -> str:
        """What is still held at the end (an incomplete character decodes as U+FFFD, as in a full decode)."""
        before = self._decode(self.ids[self.prefix_offset:self.read_offset])
        now = self._decode(self.ids[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.ids)
        return now[len(before):] if len(now) > len(before) else ""


class StopMatcher:
    """Finds the first stop string in a stream of characters with one Knuth-Morris-Pratt automaton per string.

    Each character costs amortised O(1) per stop string, however long the strings are; the
    characters that may still start a stop string are held back, exactly as many as the longest
    partial match.
    """

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.failure = [self._failure(s) for s in self.stops]
        self.matched = [0] * len(self.stops)  # characters of each stop string matched so far
        self.pending = ""  # characters not released yet: a suffix of the text, as long as the longest partial match
        self.stopped = False

    @staticmethod
    def _failure(pattern: str) -> list[int]:
        table, k = [0] * len(pattern), 0
        for i in range(1, len(pattern)):
            while k and pattern[i] != pattern[k]:
                k = table[k - 1]
            if pattern[i] == pattern[k]:
                k += 1
            table[i] = k
        return table

    def feed(self, text: str) -> str:
        """The part of `text` (with what was held back) that no stop string can claim any more."""
        released = []
        for char in text:
            if self.stopped:
                break
            self.pending += char
            longest_hit = 0
            for i, stop in enumerate(self.stops):
                k = self.matched[i]
                while k and char != stop[k]:
                    k = self.failure[i][k - 1]
                k = k + 1 if char == stop[k] else 0
                if k == len(stop):
                    longest_hit = max(longest_hit, k)
                    k = self.failure[i][k - 1]
                self.matched[i] = k
            if longest_hit:  # the text ends before the stop string that ends here and starts first
                released.append(self.pending[:len(self.pending) - longest_hit])
                self.pending, self.stopped = "", True
                break
            held = max(self.matched, default=0)
            if len(self.pending) > held:
                released.append(self.pending[:len(self.pending) - held])
                self.pending = self.pending[len(self.pending) - held:]
        return "".join(released)

    def flush(self) -> str:
        """At the end of the answer nothing more can match: release what was held back."""
        rest, self.pending = ("" if self.stopped else self.pending), ""
        return rest


class TextStream:
    """Token ids -> text deltas, released only where final: no half characters, nothing a stop string may still claim."""

    def __init__(self, tokenizer: Any, stop: list[str]):
        self.decoder = IncrementalDecoder(tokenizer)
        self.matcher = StopMatcher(stop)

    @property
    def stopped(self) -> bool:
        return self.matcher.stopped

    def add(self, token_id: int) -> str:
        return self.matcher.feed(self.decoder.add(token_id))

    def flush(self) -> str:
        return self.matcher.feed(self.decoder.flush()) + self.matcher.flush()
