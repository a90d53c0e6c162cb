"""Tokens in and out, and the gaps between a stream's events, as cheaply as they come.

Token counts are read from what the upstream reports, in whichever API's shape:
OpenAI's ``usage`` (``prompt_tokens``/``completion_tokens``), the Responses API's
``response.usage`` (``input_tokens``/``output_tokens``), Anthropic's ``message.usage`` and
``message_delta``'s ``usage``, or llama-server's ``timings`` (``prompt_n``/``predicted_n``).
Inter-event gaps are counted into fixed buckets per request (a bisect and two additions
per event) and handed to the registry once, when the request ends.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

__all__ = ["GAP_BUCKETS", "GapCounts", "TokenCounts"]

GAP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_PAIRS = (("prompt_tokens", "completion_tokens"), ("input_tokens", "output_tokens"))


class TokenCounts:
    """The largest counts seen for one request (streams report them once or growing)."""

    __slots__ = ("generated", "prompt")

    def __init__(self) -> None:
        self.prompt = 0
        self.generated = 0

    def note(self, payload: dict[str, Any]) -> None:
        """Take the counts a payload carries (any of the shapes in the module doc)."""
        for holder in (payload, payload.get("response"), payload.get("message")):
            if isinstance(holder, dict):
                self._usage(holder.get("usage"))
        timings = payload.get("timings")
        if isinstance(timings, dict):
            self._pair(timings.get("prompt_n"), timings.get("predicted_n"))

    def _usage(self, usage: object) -> None:
        if isinstance(usage, dict):
            for prompt, generated in _PAIRS:
                self._pair(usage.get(prompt), usage.get(generated))

    def _pair(self, prompt: object, generated: object) -> None:
        if isinstance(prompt, int) and not isinstance(prompt, bool):
            self.prompt = max(self.prompt, prompt)
        if isinstance(generated, int) and not isinstance(generated, bool):
            self.generated = max(self.generated, generated)


class GapCounts:
    """Inter-event gaps of one stream (or of many, merged), in ``GAP_BUCKETS``."""

    __slots__ = ("_last", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(GAP_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0
        self._last: float | None = None

    def event_at(self, now: float) -> None:
        """An event was relayed at ``now``: count the gap since the one before."""
        last, self._last = self._last, now
        if last is not None:
            gap = now - last
            self.counts[bisect_left(GAP_BUCKETS, gap)] += 1
            self.total += gap

    def merge(self, other: GapCounts) -> None:
        """Add ``other``'s gaps to these."""
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.total += other.total

    @property
    def observed(self) -> int:
        """How many gaps were counted."""
        return sum(self.counts)
