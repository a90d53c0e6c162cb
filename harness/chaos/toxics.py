"""The chaos runner's network faults: which netfault toxic a ``net_*`` request gets.

Pure code. ``draw_toxic`` turns a ``net_*`` kind and the run's random stream into a
``ToxicPlan`` (what the runner installs on the lane it lends the request), the
seconds the toxic may add to an honest answer, and what the toxic must do to the
response (``SUCCEED``, ``FAIL`` or ``EITHER``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from harness.chaos.kinds import EITHER, FAIL, SUCCEED

__all__ = ["ToxicPlan", "draw_toxic"]


@dataclass(frozen=True)
class ToxicPlan:
    """One netfault toxic, added to the lane for the time of one request."""

    type: str
    stream: str
    attributes: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """``type:stream:attr=value,...``, the form the report prints."""
        attrs = ",".join(f"{k}={v}" for k, v in sorted(self.attributes.items()))
        return f"{self.type}:{self.stream}:{attrs}"


def draw_toxic(
    kind: str,
    rng: random.Random,
    n_events: int,
    *,
    delay_scale: float,
    header_timeout: float | None,
) -> tuple[ToxicPlan, float, str]:
    """A toxic for a lane: (toxic, seconds it may add, expectation)."""
    scale = delay_scale
    approx_bytes = 400 * n_events + 400  # headers + events; generous
    if kind == "net_latency":
        latency = int(rng.uniform(5, 60) * scale)
        jitter = rng.randint(0, latency // 2)
        stream = rng.choice(("downstream", "upstream"))
        # Every chunk is late by at most latency + jitter; order is kept, so the whole
        # response is late by about that once (plus queueing behind late chunks).
        extra = 2 * (latency + jitter) / 1000.0 * 4
        return ToxicPlan("latency", stream, {"latency": latency, "jitter": jitter}), extra, SUCCEED
    if kind == "net_bandwidth":
        rate = rng.randint(20, 200)  # KB/s
        extra = approx_bytes / (rate * 1000.0) * 2 + 0.2
        return ToxicPlan("bandwidth", "downstream", {"rate": rate}), extra, SUCCEED
    if kind == "net_slicer":
        avg = rng.randint(4, 64)
        var = rng.randint(0, avg - 1)
        delay_us = rng.randint(0, 300)
        extra = approx_bytes / max(1, avg - var) * delay_us / 1e6 * 2
        attrs = {"average_size": avg, "size_variation": var, "delay": delay_us}
        return ToxicPlan("slicer", "downstream", attrs), extra, SUCCEED
    if kind == "net_slow_close":
        delay_ms = int(rng.uniform(20, 300) * scale)
        return ToxicPlan("slow_close", "downstream", {"delay": delay_ms}), delay_ms / 1000, SUCCEED
    if kind == "net_reset_peer":
        timeout = rng.choice((0, rng.randint(1, 200)))
        stream = rng.choice(("downstream", "upstream"))
        toxic = ToxicPlan("reset_peer", stream, {"timeout": timeout})
        return toxic, timeout / 1000, FAIL
    if kind == "net_limit_data":
        limit = rng.randint(60, 3000)
        return ToxicPlan("limit_data", "downstream", {"bytes": limit}), 0.0, EITHER
    assert kind == "net_timeout"
    timeout = rng.choice((0, rng.randint(1, 500)))
    # timeout=0 never closes: the server's header timeout has to end it.
    extra = timeout / 1000 if timeout else (header_timeout or 0.0)
    return ToxicPlan("timeout", "downstream", {"timeout": timeout}), extra, FAIL
