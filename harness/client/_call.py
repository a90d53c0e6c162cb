"""The machinery of one request: treq underneath, the timers, and the ways to leave early.

``_Call.run`` sends the request, waits for headers, then lets Twisted deliver the body
to ``_BodyReceiver``, which hands every byte to the call as it arrives. The call times
each arrival, feeds ``BodyState`` and re-arms the idle timer. Three things can end the
call before the body ends on its own: the total or idle timer (``stop``), the caller's
``disconnect_after`` or a raising ``on_event`` (``stop`` too), and the caller cancelling
(``cancel_body``). Each decides the result first and drops the connection second, so
nothing that still arrives can change a verdict already given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from harness._twisted_compat import body_socket
from harness.client._body import BodyState
from harness.client._classify import body_end_reason, classify, classify_failure, describe
from harness.client._result import (
    END_CLIENT_ABORT,
    END_IDLE_TIMEOUT,
    END_LOST,
    END_TIMEOUT,
    StreamResult,
)
from server_core.sse import Comment, Event
from server_core.sse.dialects import CHAT, StreamDialect

__all__ = ["Call"]


def _abort(transport: Any) -> None:
    """Drop the connection carrying a response body at once.

    The body protocol only sees Twisted's ``TransportProxyProducer``, whose public
    ``loseConnection`` waits for the write buffer; reach the real TCP transport for
    ``abortConnection`` when it is there, otherwise fall back to the public call.
    """
    inner = body_socket(transport)
    abort = getattr(inner, "abortConnection", None)
    if abort is not None:
        abort()
    elif hasattr(transport, "loseConnection"):
        transport.loseConnection()
    elif transport is not None:
        transport.stopProducing()


class _BodyReceiver(Protocol):
    """Hands response body bytes and the end of the body to the call as they come."""

    def __init__(self, call: Call) -> None:
        self._call = call

    def connectionMade(self) -> None:
        self._call.body_transport = self.transport

    def dataReceived(self, data: bytes) -> None:
        self._call.on_data(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._call.on_body_end(reason)


class Call:
    """State of one request; ``stream_request`` is a thin wrapper around ``run``."""

    def __init__(
        self,
        reactor: Any,
        now: Callable[[], float],
        max_events: int | None,
        disconnect_after: int | None,
        body_limit: int,
        listener: Callable[[Event, float], None] | None,
        dialect: StreamDialect = CHAT,
    ) -> None:
        self.listener = listener
        self.listener_failure: Failure | None = None
        self.reactor = reactor
        self.now = now
        self.disconnect_after = disconnect_after
        self.r = StreamResult()
        self.body = BodyState(self.r, max_events, body_limit, dialect)
        self.body_transport: Any = None
        self.request_d: Deferred[Any] | None = None
        self.finished: Deferred[None] | None = None
        self.closed = False  # result decided; ignore anything that still arrives
        self.total_call: IDelayedCall | None = None
        self.idle_call: IDelayedCall | None = None
        self.idle_timeout: float | None = None

    # -- timers -------------------------------------------------------------

    def start_timers(self, timeout: float, idle_timeout: float | None) -> None:
        """Arm the total timer and, if asked for, the idle timer."""
        self.total_call = self.reactor.callLater(timeout, self.stop, END_TIMEOUT)
        if idle_timeout is not None:
            self.idle_timeout = idle_timeout
            self.idle_call = self.reactor.callLater(idle_timeout, self.stop, END_IDLE_TIMEOUT)

    def touch(self) -> None:
        """Something arrived: the idle timer starts over."""
        if self.idle_call is not None and self.idle_call.active():
            assert self.idle_timeout is not None
            self.idle_call.reset(self.idle_timeout)

    def cancel_timers(self) -> None:
        """Disarm both timers (the call is over)."""
        for call in (self.total_call, self.idle_call):
            if call is not None and call.active():
                call.cancel()

    # -- ending -------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Give up on the response (timeout or client leaving) and drop the connection."""
        if self.closed or self.r.end_reason is not None:
            return
        self.r.end_reason = reason
        if self.finished is not None:
            # Body in progress: decide now, the socket closes on the next turn.
            self.closed = True
            self.body.note_leftover()
            _abort(self.body_transport)
            self.cancel_timers()
            self._release()
        elif self.request_d is not None:
            # Waiting for headers: cancelling aborts the connection (or the connect).
            self.request_d.cancel()

    def on_body_end(self, reason: Failure) -> None:
        """The body ended on its own (complete, closed or lost)."""
        if self.closed:
            return
        self.closed = True
        self.r.end_reason = body_end_reason(reason)
        if self.r.end_reason == END_LOST:
            self.r.exception = describe(reason)
        self.body.end(self.now())
        self._release()

    def cancel_body(self, d: Deferred[None]) -> None:
        """The caller cancelled us while reading the body: leave at once."""
        self.finished = None
        self.closed = True
        self.r.end_reason = END_CLIENT_ABORT
        _abort(self.body_transport)

    def _release(self) -> None:
        # Wake ``run`` exactly once: whichever ending comes first fires ``finished``.
        d, self.finished = self.finished, None
        if d is not None:
            d.callback(None)

    # -- headers and body ---------------------------------------------------

    def on_headers(self, response: IResponse) -> None:
        """Record status and headers, and decide how the body will be read."""
        r = self.r
        r.t_headers = self.now()
        r.status = response.code
        r.headers = {
            k.decode("latin-1").lower(): [v.decode("latin-1") for v in vs]
            for k, vs in response.headers.getAllRawHeaders()
        }
        self.touch()
        self.body.begin(response.code)

    def on_data(self, data: bytes) -> None:
        """Body bytes arrived: time them, then buffer or decode them."""
        if self.closed:
            return
        t = self.now()
        self.body.arrived(data, t)
        self.touch()
        decoder = self.body.decoder
        if decoder is None:
            return
        try:
            items = decoder.feed(data)
        except ValueError as exc:  # an overlong line: not a stream we can follow
            self.r.exception = f"ValueError: {exc}"
            self.stop(END_LOST)
            return
        self._deliver(items, t)

    def _deliver(self, items: list[Event | Comment], t: float) -> None:
        for item in items:
            if self.closed:  # a callback (on_event, a cancel) ended the call
                return
            if isinstance(item, Comment):
                self.body.on_comment()
                continue
            self.body.on_event(item, t)
            if not self._notify(item, t):
                return
            if self.disconnect_after is not None and self.r.n_events >= self.disconnect_after:
                self.stop(END_CLIENT_ABORT)
                return

    def _notify(self, ev: Event, t: float) -> bool:
        """Tell the caller's ``on_event``; False if it raised (the call is then stopped)."""
        if self.listener is None:
            return True
        try:
            self.listener(ev, t)
        except Exception:
            # A bug in the caller's callback must not pass for a broken stream.
            self.listener_failure = Failure()
            self.stop(END_CLIENT_ABORT)
            return False
        return True

    # -- driver -------------------------------------------------------------

    async def run(
        self,
        method: str,
        url: str,
        payload: bytes | None,
        headers: Headers,
        pool: HTTPConnectionPool | None,
        timeout: float,
        idle_timeout: float | None,
    ) -> StreamResult:
        """Send the request and follow the response to its end; the result, always."""
        if pool is None:
            pool = HTTPConnectionPool(self.reactor, persistent=False)
        http = HTTPClient(Agent(self.reactor, pool=pool))
        r = self.r
        r.t_start = self.now()
        self.start_timers(timeout, idle_timeout)
        try:
            response = await self._send(http, method, url, payload, headers)
            if response is not None:
                await self._read_body(response)
                r.outcome = classify(self.body, self.now)
                self.body.transcript.write()
            return r
        finally:
            self.cancel_timers()

    async def _send(
        self, http: HTTPClient, method: str, url: str, payload: bytes | None, headers: Headers
    ) -> IResponse | None:
        """The response (headers in); None if the request failed, as recorded in the result."""
        self.request_d = http.request(
            method, url, data=payload, headers=headers, unbuffered=True, allow_redirects=False
        )
        try:
            response = await self.request_d
        except CancelledError:
            if self.r.end_reason is None:
                raise  # the caller cancelled us
            self._failed(Failure())
            return None
        except Exception:
            self._failed(Failure())
            return None
        self.request_d = None
        return response

    def _failed(self, failure: Failure) -> None:
        classify_failure(self.r, failure)
        self.r.t_end = self.now()

    async def _read_body(self, response: IResponse) -> None:
        """Deliver the body to a ``_BodyReceiver`` and wait until one ending decides it."""
        self.on_headers(response)
        self.finished = Deferred(self.cancel_body)
        response.deliverBody(_BodyReceiver(self))
        if self.finished is not None:
            await self.finished
        if self.listener_failure is not None:
            self.listener_failure.raiseException()
        self.r.t_end = self.now()
