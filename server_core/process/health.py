"""``GET /health`` of a llama-server child: readiness while it starts, liveness once ready.

llama-server binds before it loads the model: ``/health`` answers 503 while loading and
200 once ready; connection refused means it is not listening yet. With ``--port 0`` it
logs its port only once loaded, so polling starts when the port is known
(``ReadinessPoll.poll``) and runs every ``interval`` seconds until 200 or the start
deadline. The third runner of the race is the child's exit: the lifecycle machine
(``server_core.process.llama_process``) cancels the poll when the child dies.

Once ready, a ``LivenessProbe`` asks ``/health`` every ``interval`` seconds: a child that
is frozen (SIGSTOP), deadlocked or livelocked keeps its process and its socket, so only a
question it must answer shows it. llama-server answers ``/health`` from its HTTP threads
without waiting for a slot, so a busy child still answers at once (measured on the real
server with every slot generating: at most 14 ms on two shared cores); ``misses``
consecutive unanswered probes (no 200 within ``timeout``) and the lifecycle kills it.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool

from server_core.upstream import read_complete_body

__all__ = ["HealthCheck", "HttpHealthCheck", "LivenessProbe", "ReadinessPoll"]

log = Logger()

HealthCheck = Callable[[str, float], "Deferred[int | None]"]
"""``(base_url, timeout) -> Deferred`` of the ``/health`` status, None if unreachable.
Must not fail."""

_MIN_POLL_TIMEOUT = 0.05
_MAX_POLL_TIMEOUT = 2.0  # one slow answer must not eat the whole start deadline
_MAX_BODY = 64 * 1024  # {"status":"ok"} or llama-server's loading error


class HttpHealthCheck:
    """``GET /health`` with its own non-persistent pool (no idle sockets left behind).

    ``reactor`` must also provide TCP (the ``Agent`` connects with it).
    """

    def __init__(self, reactor: IReactorTime) -> None:
        self.reactor = reactor
        self._agent = Agent(
            reactor, connectTimeout=5, pool=HTTPConnectionPool(reactor, persistent=False)
        )

    def __call__(self, base_url: str, timeout: float) -> Deferred[int | None]:
        """The status of ``base_url/health``, or None when it cannot be reached in time."""

        async def check() -> int | None:
            url = (base_url + "/health").encode("ascii")
            response = await self._agent.request(b"GET", url)
            # Only the status matters: a body ended by the close (no Content-Length) counts.
            await read_complete_body(
                response, limit=_MAX_BODY, idle_timeout=timeout, clock=self.reactor,
                close_ends_body=True,
            )  # fmt: skip
            return int(response.code)

        def unreachable(failure: Failure) -> None:
            # refused, reset, timed out, cancelled: all mean "not ready yet"
            log.debug("health poll {url}: {why}", url=base_url, why=failure.getErrorMessage())
            return None

        d = Deferred.fromCoroutine(check())
        d.addTimeout(timeout, self.reactor)
        return d.addErrback(unreachable)


class ReadinessPoll:
    """Waits for one starting child's ``/health`` to answer 200 within ``timeout``.

    The deadline runs from construction (the spawn). Exactly one of ``on_ready`` and
    ``on_timeout`` is called, unless ``cancel()`` comes first.
    """

    def __init__(
        self,
        clock: IReactorTime,
        check: HealthCheck,
        *,
        timeout: float,
        interval: float,
        on_ready: Callable[[], None],
        on_timeout: Callable[[], None],
        alias: str = "",
    ) -> None:
        self._clock = clock
        self._check = check
        self._interval = interval
        self._on_ready = on_ready
        self._on_timeout = on_timeout
        self._alias = alias
        self._deadline = clock.seconds() + timeout
        self._base_url: str | None = None
        self._over = False
        self._timer: IDelayedCall | None = clock.callLater(timeout, self._timed_out)
        self._next: IDelayedCall | None = None
        self._in_flight: Deferred[int | None] | None = None

    def poll(self, base_url: str) -> None:
        """Begin polling ``base_url`` (the port is known); later calls change nothing."""
        if self._over or self._base_url is not None:
            return
        self._base_url = base_url
        self._ask()

    def cancel(self) -> None:
        """Stop: no timer, no next poll, the poll in flight cancelled. Idempotent."""
        self._over = True
        for call in (self._timer, self._next):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._next = None
        d, self._in_flight = self._in_flight, None
        if d is not None:
            d.cancel()

    def _timed_out(self) -> None:
        self._timer = None
        self.cancel()
        self._on_timeout()

    def _ask(self) -> None:
        self._next = None
        if self._over or self._base_url is None:
            return
        left = self._deadline - self._clock.seconds()
        d = self._check(self._base_url, max(_MIN_POLL_TIMEOUT, min(_MAX_POLL_TIMEOUT, left)))
        self._in_flight = d

        def answered(status: int | None) -> None:
            if self._in_flight is not d:
                return  # cancelled: the start is over
            self._in_flight = None
            if status == 200:
                self.cancel()
                self._on_ready()
            else:
                self._next = self._clock.callLater(self._interval, self._ask)

        def broken(failure: Failure) -> None:
            if not failure.check(CancelledError):
                log.failure("[{alias}] health poll failed", failure, alias=self._alias)

        d.addCallback(answered)
        d.addErrback(broken)


class LivenessProbe:
    """Asks a ready child's ``/health`` every ``interval`` s until ``cancel()``.

    A probe is missed when no 200 comes within ``timeout``; ``misses`` in a row call
    ``on_dead(reason)`` once, and the probe stops. Any 200 resets the count, so one slow
    answer is forgiven. Probes never overlap: the next one starts ``interval`` after the
    previous one started, or as soon as it is answered if that took longer.
    """

    def __init__(
        self,
        clock: IReactorTime,
        check: HealthCheck,
        base_url: str,
        *,
        interval: float,
        timeout: float,
        misses: int,
        on_dead: Callable[[str], None],
        alias: str = "",
    ) -> None:
        self._clock = clock
        self._check = check
        self._base_url = base_url
        self._interval = interval
        self._timeout = timeout
        self._misses = misses
        self._on_dead = on_dead
        self._alias = alias
        self.missed = 0  # consecutive misses so far
        self.missed_total = 0  # every miss of this probe (``/running``, the metrics)
        self._over = False
        self._in_flight: Deferred[int | None] | None = None
        self._next: IDelayedCall | None = clock.callLater(interval, self._ask)

    @property
    def active(self) -> bool:
        """True until ``cancel()`` or the verdict."""
        return not self._over

    def cancel(self) -> None:
        """Stop probing (the child left ``ready``): no timer, the probe in flight dropped."""
        self._over = True
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        d, self._in_flight = self._in_flight, None
        if d is not None:
            d.cancel()

    def _ask(self) -> None:
        self._next = None
        if self._over:
            return
        began = self._clock.seconds()
        d = self._check(self._base_url, self._timeout)
        self._in_flight = d

        def answered(status: int | None) -> None:
            if self._in_flight is not d:
                return  # cancelled: the child is not ready any more
            self._in_flight = None
            if status == 200:
                self.missed = 0
            elif self._count_miss(status):
                return
            wait = max(0.0, began + self._interval - self._clock.seconds())
            self._next = self._clock.callLater(wait, self._ask)

        def broken(failure: Failure) -> None:
            if not failure.check(CancelledError):
                log.failure("[{alias}] liveness probe failed", failure, alias=self._alias)

        d.addCallback(answered)
        d.addErrback(broken)

    def _count_miss(self, status: int | None) -> bool:
        """Count a miss; True when it was the last one allowed (``on_dead`` called)."""
        self.missed += 1
        self.missed_total += 1
        what = f"no answer within {self._timeout:g} s" if status is None else f"status {status}"
        log.warn(
            "[{alias}] /health: {what} ({n} of {misses} allowed misses)",
            alias=self._alias, what=what, n=self.missed, misses=self._misses,
        )  # fmt: skip
        if self.missed < self._misses:
            return False
        self._over = True
        self._on_dead(f"stopped answering /health ({self.missed} probes in a row: {what})")
        return True
