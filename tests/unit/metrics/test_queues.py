"""QueueWatch: a queue event per alias whose counts changed, only while someone listens."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from server_core.metrics import EventBus
from server_core.metrics.queues import QueueWatch


def setup() -> tuple[QueueWatch, EventBus, Clock, list[dict[str, Any]]]:
    bus, clock = EventBus(), Clock()
    rows: list[dict[str, Any]] = [{"alias": "a", "waiting": 0, "in_flight": 1}]
    return QueueWatch(bus, lambda: rows, clock, interval=0.5), bus, clock, rows


def queued(subscription: Any) -> list[dict[str, Any]]:
    events = list(subscription._events)
    subscription._events.clear()
    return events


def test_changes_are_published_and_unchanged_counts_are_not() -> None:
    watch, _, clock, rows = setup()
    subscription = watch.subscribe()
    clock.advance(0.5)
    assert queued(subscription) == []  # what it was at connect is no change
    rows[:] = [{"alias": "a", "waiting": 2, "in_flight": 1}, {"alias": "b", "waiting": 1}]
    clock.advance(0.5)
    assert queued(subscription) == [
        {"type": "queue", "alias": "a", "waiting": 2, "in_flight": 1},
        {"type": "queue", "alias": "b", "waiting": 1, "in_flight": 0},
    ]
    rows[:] = [{"alias": "a", "waiting": 2, "in_flight": 1}]  # b's row is gone: empty
    clock.advance(0.5)
    assert queued(subscription) == [{"type": "queue", "alias": "b", "waiting": 0, "in_flight": 0}]


def test_it_stops_looking_when_the_last_reader_leaves_and_starts_again_for_a_new_one() -> None:
    watch, _, clock, rows = setup()
    looks = 0

    def counting_rows() -> list[dict[str, Any]]:
        nonlocal looks
        looks += 1
        return rows

    watch._rows = counting_rows
    subscription = watch.subscribe()
    clock.advance(0.5)
    subscription.close()
    clock.advance(0.5)  # sees nobody listens, and stops
    before = looks
    clock.advance(10)
    assert looks == before and clock.getDelayedCalls() == []
    again = watch.subscribe()
    rows[:] = [{"alias": "a", "waiting": 5, "in_flight": 1}]
    clock.advance(0.5)
    assert queued(again) == [{"type": "queue", "alias": "a", "waiting": 5, "in_flight": 1}]
