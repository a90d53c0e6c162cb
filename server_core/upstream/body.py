"""Reading a whole upstream response body: the one policy for what counts as complete.

A protocol plus a function returning a Deferred, like treq's ``content.collect``.
A body is complete only when Twisted says ``ResponseDone`` (its Content-Length or
its last chunk arrived). Unlike treq, a body that ended because the connection
closed (``PotentialDataLoss``) is not accepted: a JSON reply cut by a crash looks
exactly like that, and llama-server and API servers always frame their bodies.
The one exception is a caller that needs only the status (the readiness probe's
``/health``): it passes ``close_ends_body=True``, since there a body ended by the
connection's close loses nothing. (Twisted reports the end of an unframed body as
``PotentialDataLoss`` however the connection went, which is why framing is required.)
The body may also not outgrow ``limit`` nor stay silent longer than ``idle_timeout``.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

from server_core._twisted_compat import abort_body_transport

__all__ = ["BodyIncomplete", "abort_body_transport", "read_complete_body"]


class BodyIncomplete(Exception):
    """The upstream body ended early, went silent or was larger than allowed."""


class _BodyReader(Protocol):
    """Collects a body into ``done`` under a size limit and an idle deadline."""

    def __init__(
        self,
        limit: int,
        idle_timeout: float | None,
        clock: IReactorTime,
        close_ends_body: bool = False,
    ) -> None:
        self.done: defer.Deferred[bytes] = defer.Deferred(self._cancel)
        self._close_ends_body = close_ends_body
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = limit
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._idle: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        if self._idle_timeout:
            self._idle = self._clock.callLater(self._idle_timeout, self._stalled)

    def _disarm(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._fail(BodyIncomplete(f"body larger than {self._limit} bytes"))
            return
        self._chunks.append(data)
        self._arm()

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        self._disarm()
        if self.done.called:
            return
        if reason.check(ResponseDone) or (
            self._close_ends_body and reason.check(PotentialDataLoss)
        ):
            self.done.callback(b"".join(self._chunks))
        else:
            self.done.errback(BodyIncomplete("connection lost before the body was complete"))

    def _stalled(self) -> None:
        """The idle deadline passed without a byte: give up and free the connection."""
        self._fail(BodyIncomplete(f"nothing received for {self._idle_timeout:g} s"))

    def _fail(self, exc: Exception) -> None:
        self._abort()
        if not self.done.called:
            self.done.errback(exc)

    def _cancel(self, d: defer.Deferred[bytes]) -> None:
        self._abort()

    def _abort(self) -> None:
        """Stop the deadline and reset the connection (a body read half is of no use)."""
        self._disarm()
        abort_body_transport(self.transport)


def read_complete_body(
    response: IResponse,
    *,
    limit: int,
    idle_timeout: float | None,
    clock: IReactorTime,
    close_ends_body: bool = False,
) -> defer.Deferred[bytes]:
    """The whole body, or ``BodyIncomplete``; cancelling aborts the connection.

    ``close_ends_body``: a body ended by the connection's close counts as complete (for
    callers that need only the status; see the module doc).
    """
    reader = _BodyReader(limit, idle_timeout, clock, close_ends_body)
    response.deliverBody(reader)
    return reader.done
