"""Drain on shutdown: let responses in flight finish, then end the rest honestly.

Shutdown order: stop accepting, let responses in flight finish for up to
``drain_timeout`` seconds, end the streams still running with an error event and
answer requests still waiting for their upstream with 503, close client connections
after flushing them, then close upstream pools and stop managed processes.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from server_core._twisted_compat import clear_exit_signal
from server_core.errors import ContextError, ServerCoreError
from server_core.interfaces import IRouterState
from server_core.web.site import GuardedSite

__all__ = ["DrainService", "InFlight", "shutting_down"]

log = Logger()

_T = TypeVar("_T")


class EndableStream(Protocol):
    """A stream relaying to a client that the drain may end with one error event."""

    def end_with(self, error: ServerCoreError) -> None: ...


class InFlight:
    """Responses in progress, so shutdown can drain them and then end the rest honestly.

    Work still waiting for the upstream (no byte sent to the client yet) is tracked as
    Deferreds that shutdown cancels, so those clients get a 503 instead of a closed
    socket; streams already relaying get one error event.
    """

    def __init__(self) -> None:
        self._streams: set[EndableStream] = set()
        self._waiting: set[defer.Deferred[Any]] = set()
        self._count = 0
        self._idle_waiters: list[defer.Deferred[None]] = []
        self.closing = False

    def __len__(self) -> int:
        return self._count

    def enter(self) -> None:
        self._count += 1

    def leave(self) -> None:
        self._count -= 1
        if self._count == 0:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def add_stream(self, stream: EndableStream) -> None:
        self._streams.add(stream)

    def discard_stream(self, stream: EndableStream) -> None:
        self._streams.discard(stream)

    def waiting(self, d: defer.Deferred[_T]) -> defer.Deferred[_T]:
        """Track ``d`` (upstream work before the first byte) until it fires."""
        self._waiting.add(d)

        def done(result: _T) -> _T:
            self._waiting.discard(d)
            return result

        return d.addBoth(done)

    def when_idle(self) -> defer.Deferred[None]:
        """A fresh Deferred that fires when no response is in progress."""
        if self._count == 0:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._idle_waiters.append(d)
        return d

    def end_all(self, error: ServerCoreError) -> None:
        """Drain timeout: 503 for requests still waiting, an error event for streams."""
        for d in list(self._waiting):
            d.cancel()
        for stream in list(self._streams):
            stream.end_with(error)


def shutting_down() -> ContextError:
    return ContextError(
        "The server is shutting down; retry the request.", headers={"Retry-After": "5"}
    )


class DrainService(Service):
    """On stop: wait for responses in flight, then end what is left honestly."""

    def __init__(
        self,
        in_flight: InFlight,
        router: IRouterState,
        site: GuardedSite,
        drain_timeout: float,
        reactor: Any,
    ):
        self._in_flight = in_flight
        self._site = site
        self._router = router
        self._drain_timeout = drain_timeout
        self._reactor = reactor

    async def _drain(self) -> None:
        in_flight = self._in_flight
        in_flight.closing = True
        if len(in_flight):
            log.info(
                "draining {n} responses in flight (up to {t:g} s)",
                n=len(in_flight),
                t=self._drain_timeout,
            )
            idle = in_flight.when_idle()
            idle.addTimeout(self._drain_timeout, self._reactor)
            try:
                await idle
            except defer.TimeoutError:
                log.warn("drain timeout: ending {n} responses", n=len(in_flight))
                in_flight.end_all(shutting_down())
        await self._site.close_connections(timeout=5.0)
        await self._router.close()
        # twistd re-raises the signal that stopped the reactor so the exit status says
        # "killed by SIGTERM"; a drained shutdown is a clean one, so exit 0 instead.
        clear_exit_signal(self._reactor)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.ensureDeferred(self._drain())
