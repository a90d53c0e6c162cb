"""``TokenMeter``: the counts and times of one completion.

They feed three reports that must agree: the response's ``timings`` and ``usage``,
and the server-wide ``Stats`` behind ``/metrics``.
"""

from __future__ import annotations

from typing import Any

from harness.fake_llama.config import Stats

__all__ = ["TokenMeter"]


class TokenMeter:
    """Prompt size, tokens sent so far, and when the prompt and the first token were done."""

    def __init__(self, reactor: Any, n_prompt: int) -> None:
        self.reactor = reactor
        self.n_prompt = n_prompt
        self.n_sent = 0
        self.t_start = 0.0
        self.t_first = 0.0

    def start(self) -> None:
        """The request got its slot: prompt processing begins."""
        self.t_start = self.reactor.seconds()

    def first_token(self) -> None:
        """The prompt is done; generation begins."""
        self.t_first = self.reactor.seconds()

    def timings(self) -> dict[str, Any]:
        """llama-server's ``timings`` object."""
        now = self.reactor.seconds()
        prompt_ms = max(0.0, (self.t_first or now) - self.t_start) * 1000.0
        pred_ms = max(0.0, now - (self.t_first or now)) * 1000.0
        n_p, n_g = self.n_prompt, self.n_sent
        return {
            "cache_n": 0,
            "prompt_n": n_p,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / n_p if n_p else 0.0,
            "prompt_per_second": n_p / prompt_ms * 1000.0 if prompt_ms > 0 else 0.0,
            "predicted_n": n_g,
            "predicted_ms": pred_ms,
            "predicted_per_token_ms": pred_ms / n_g if n_g else 0.0,
            "predicted_per_second": n_g / pred_ms * 1000.0 if pred_ms > 0 else 0.0,
        }

    def usage(self) -> dict[str, Any]:
        """The OpenAI ``usage`` object."""
        n_p, n_g = self.n_prompt, self.n_sent
        return {
            "completion_tokens": n_g,
            "prompt_tokens": n_p,
            "total_tokens": n_p + n_g,
            "prompt_tokens_details": {"cached_tokens": 0},
        }

    def account(self, stats: Stats) -> None:
        """Add this completion to the server's counters (once, when it ends)."""
        stats.prompt_tokens += self.n_prompt
        stats.predicted_tokens += self.n_sent
        stats.decode_calls += self.n_sent + 1
        now = self.reactor.seconds()
        if self.t_first:
            stats.prompt_seconds += self.t_first - self.t_start
            stats.predicted_seconds += now - self.t_first
