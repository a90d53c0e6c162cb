"""The live events of the server, for ``GET /api/events``.

``EventBus.publish`` hands one event (a small dict with a ``type``) to every subscriber.
A subscriber is an async iterator with a bounded backlog: a client that reads too slowly
loses the oldest events and is told how many (a ``dropped`` event), so a stuck reader
never holds memory or slows a request. Publishing with no subscriber costs one check.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from twisted.internet import defer

__all__ = ["EventBus", "Subscription"]

BACKLOG = 1000
"""Events kept for one subscriber that has not read them yet."""


class Subscription:
    """One reader's queue of events; iterate it with ``async for``."""

    def __init__(self, bus: EventBus, backlog: int) -> None:
        self._bus = bus
        self._events: deque[dict[str, Any]] = deque(maxlen=backlog)
        self._dropped = 0
        self._waiting: defer.Deferred[None] | None = None
        self.closed = False

    def put(self, event: dict[str, Any]) -> None:
        if len(self._events) == self._events.maxlen:
            self._dropped += 1
        self._events.append(event)
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting.called:
            waiting.callback(None)

    def close(self) -> None:
        """Stop receiving events (the reader left)."""
        self.closed = True
        self._bus.unsubscribe(self)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        try:
            while not self.closed:
                if self._dropped:
                    dropped, self._dropped = self._dropped, 0
                    yield {"type": "dropped", "count": dropped}
                if self._events:
                    yield self._events.popleft()
                    continue
                self._waiting = defer.Deferred()
                await self._waiting
        finally:
            self.close()


class EventBus:
    """Fans events out to subscribers (see module doc)."""

    def __init__(self, backlog: int = BACKLOG) -> None:
        self._subscribers: list[Subscription] = []
        self._backlog = backlog

    def __bool__(self) -> bool:
        """True while someone listens: callers may skip building an event otherwise."""
        return bool(self._subscribers)

    def subscribe(self) -> Subscription:
        subscription = Subscription(self, self._backlog)
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    def publish(self, event: dict[str, Any]) -> None:
        for subscription in self._subscribers:
            subscription.put(event)
