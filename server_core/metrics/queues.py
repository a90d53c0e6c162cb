"""Queue changes as events: each alias's waiting and in-flight counts, while someone listens.

The shared context tells its listeners of grants, not of arrivals, so the queue is read
from its ``running()`` rows instead: every ``interval`` seconds while ``/api/events`` has
a reader (and never otherwise), a ``queue`` event for each alias whose counts changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from server_core.metrics.events import EventBus, Subscription

__all__ = ["QueueWatch"]

INTERVAL = 0.25
"""Seconds between two looks at the queue while someone listens."""


class QueueWatch:
    """Publishes queue changes to ``bus`` (see module doc)."""

    def __init__(
        self,
        bus: EventBus,
        rows: Callable[[], list[dict[str, Any]]],
        clock: IReactorTime,
        interval: float = INTERVAL,
    ) -> None:
        self._bus = bus
        self._rows = rows
        self._clock = clock
        self._interval = interval
        self._last: dict[str, tuple[int, int]] = {}
        self._call: IDelayedCall | None = None

    def subscribe(self) -> Subscription:
        """A subscription to the bus; the watch runs while any exists."""
        subscription = self._bus.subscribe()
        if self._call is None:
            self._last = self._counts()  # changes from now on, not the state at connect
            self._call = self._clock.callLater(self._interval, self._look)
        return subscription

    def _counts(self) -> dict[str, tuple[int, int]]:
        return {
            str(row["alias"]): (int(row.get("waiting") or 0), int(row.get("in_flight") or 0))
            for row in self._rows()
        }

    def _look(self) -> None:
        self._call = None
        if not self._bus:
            return  # nobody listens any more: stop looking
        counts = self._counts()
        for alias in sorted(counts.keys() | self._last.keys()):
            now = counts.get(alias, (0, 0))
            if now != self._last.get(alias, (0, 0)):
                waiting, in_flight = now
                self._bus.publish(
                    {"type": "queue", "alias": alias, "waiting": waiting, "in_flight": in_flight}
                )
        self._last = counts
        self._call = self._clock.callLater(self._interval, self._look)
