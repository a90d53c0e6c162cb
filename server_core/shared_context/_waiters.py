"""The queue of requests waiting for a server, in arrival order.

Each waiter holds the Deferred its request awaits, and a timer that fails it after
``queue_timeout`` seconds. The scheduler (``context._pump``) decides who is served;
this module only keeps the order and makes sure every waiter is answered exactly once
and its timer never outlives it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from server_core.aliases import LocalAlias
from server_core.shared_context.lease import Lease

__all__ = ["WaitQueue", "Waiter"]


@dataclass(eq=False)
class Waiter:
    """One request waiting for a lease on ``alias``."""

    alias: LocalAlias
    deferred: defer.Deferred[Lease]
    enqueued_at: float
    timer: IDelayedCall | None = None


class WaitQueue:
    """Waiting requests in arrival order; each is answered once, then leaves."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._waiters: list[Waiter] = []

    def __len__(self) -> int:
        return len(self._waiters)

    def __iter__(self) -> Iterator[Waiter]:
        """A snapshot: answering a waiter while iterating is safe."""
        return iter(list(self._waiters))

    def count(self, alias_name: str) -> int:
        """How many requests wait for ``alias_name``."""
        return sum(1 for w in self._waiters if w.alias.name == alias_name)

    def add(
        self,
        alias: LocalAlias,
        *,
        timeout: float,
        timed_out: Callable[[Waiter], None],
        cancelled: Callable[[], object],
    ) -> Waiter:
        """Queue a request; ``timed_out(waiter)`` runs after ``timeout`` s (if > 0).

        ``cancelled()`` runs once the request's Deferred is cancelled (the client left)
        and the waiter has left the queue.
        """

        def cancel(d: defer.Deferred[Lease]) -> None:
            for waiter in self:
                if waiter.deferred is d:
                    self.remove(waiter)
            cancelled()

        waiter = Waiter(alias, defer.Deferred(cancel), self._clock.seconds())
        if timeout > 0:
            waiter.timer = self._clock.callLater(timeout, self._expire, waiter, timed_out)
        self._waiters.append(waiter)
        return waiter

    def remove(self, waiter: Waiter) -> None:
        """Take ``waiter`` out of the queue and stop its timer."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()
        waiter.timer = None

    def fail(self, waiter: Waiter, error: Exception) -> None:
        self.remove(waiter)
        if not waiter.deferred.called:
            waiter.deferred.errback(error)

    def fail_alias(self, alias_name: str, error: Exception) -> None:
        """Fail everyone waiting for ``alias_name`` with ``error``."""
        for waiter in self:
            if waiter.alias.name == alias_name:
                self.fail(waiter, error)

    def fail_all(self, error: Exception) -> None:
        for waiter in self:
            self.fail(waiter, error)

    def _expire(self, waiter: Waiter, timed_out: Callable[[Waiter], None]) -> None:
        waiter.timer = None
        timed_out(waiter)
