"""EventBus: every subscriber gets every event; a slow one loses the oldest and is told."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import defer

from server_core.metrics import EventBus


async def take(iterator: Any, n: int) -> list[dict[str, Any]]:
    return [await iterator.__anext__() for _ in range(n)]


@pytest_twisted.ensureDeferred
async def test_each_subscriber_gets_each_event_in_order() -> None:
    bus = EventBus()
    assert not bus  # nobody listens: publishers may skip building events
    first, second = bus.subscribe(), bus.subscribe()
    assert bus
    for n in range(3):
        bus.publish({"type": "x", "n": n})
    assert [e["n"] for e in await take(aiter(first), 3)] == [0, 1, 2]
    assert [e["n"] for e in await take(aiter(second), 3)] == [0, 1, 2]


@pytest_twisted.ensureDeferred
async def test_a_reader_waiting_gets_the_next_event_when_it_is_published() -> None:
    bus = EventBus()
    events = aiter(bus.subscribe())
    pending = defer.ensureDeferred(events.__anext__())
    assert not pending.called
    bus.publish({"type": "late"})
    assert (await pending) == {"type": "late"}


@pytest_twisted.ensureDeferred
async def test_a_slow_reader_loses_the_oldest_events_and_is_told_how_many() -> None:
    bus = EventBus(backlog=3)
    events = aiter(bus.subscribe())
    for n in range(5):
        bus.publish({"type": "x", "n": n})
    got = await take(events, 4)
    assert got[0] == {"type": "dropped", "count": 2}
    assert [e["n"] for e in got[1:]] == [2, 3, 4]


@pytest_twisted.ensureDeferred
async def test_a_cancelled_reader_is_unsubscribed() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    pending = defer.ensureDeferred(aiter(subscription).__anext__())
    pending.cancel()
    try:
        await pending
    except defer.CancelledError:
        pass
    assert not bus and subscription.closed
    bus.publish({"type": "after"})  # nobody to hand it to, and no error


def test_closing_twice_is_harmless() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    subscription.close()
    subscription.close()
    assert not bus
