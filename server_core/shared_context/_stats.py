"""What the scheduler reports about itself: swaps, and how long requests waited.

``/running`` shows, per alias, the queue depth and a few recent waits (the last one,
p50 and max of the last ``RECENT`` grants), and the context counts swaps. Kept apart
from ``context`` so the scheduler's module holds only decisions.
"""

from __future__ import annotations

from collections import deque
from statistics import median
from typing import Any

from server_core.shared_context._slot import Slot

__all__ = ["RECENT", "WaitStats", "queued_row", "slot_row"]

RECENT = 100
"""How many of an alias's latest waits its p50 and max are taken over."""


class WaitStats:
    """Recent queue waits per alias (seconds from arrival to lease)."""

    def __init__(self) -> None:
        self._waits: dict[str, deque[float]] = {}

    def record(self, alias_name: str, wait: float) -> None:
        self._waits.setdefault(alias_name, deque(maxlen=RECENT)).append(max(0.0, wait))

    def row(self, alias_name: str) -> dict[str, Any]:
        """``wait_last``, ``wait_p50`` and ``wait_max`` in seconds (None before any grant)."""
        waits = self._waits.get(alias_name)
        if not waits:
            return {"wait_last": None, "wait_p50": None, "wait_max": None}
        return {
            "wait_last": round(waits[-1], 3),
            "wait_p50": round(median(waits), 3),
            "wait_max": round(max(waits), 3),
        }


def slot_row(
    slot: Slot, now: float, last_error: str | None, columns: dict[str, Any]
) -> dict[str, Any]:
    """``/running``'s row for a live server; ``columns`` are its queue's figures."""
    proc: Any = slot.process
    started_at = getattr(proc, "started_at", None)
    template = slot.template
    probe = getattr(getattr(proc, "phase", None), "liveness", None)
    return {
        "alias": slot.name,
        "state": "draining" if slot.draining else str(proc.state),
        "pid": proc.pid,
        "port": proc.port,
        "uptime": round(now - started_at, 3) if started_at is not None else None,
        "in_flight": slot.leases,
        "requests": slot.requests,
        "last_error": last_error,
        "chat_template": template.status if template else None,
        "chat_template_detail": template.detail if template else None,
        # /health probes this server missed since it became ready (its liveness probe).
        "probe_misses": getattr(probe, "missed_total", 0),
        **columns,
    }


def queued_row(name: str, last_error: str | None, columns: dict[str, Any]) -> dict[str, Any]:
    """The row for a model with no server yet whose requests wait (the next swap)."""
    row: dict[str, Any] = dict.fromkeys(
        ("pid", "port", "uptime", "chat_template", "chat_template_detail")
    )
    row.update(alias=name, state="queued", in_flight=0, requests=0, last_error=last_error)
    return {**row, **columns}
