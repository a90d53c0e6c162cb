"""The upstream half of every relay: one upstream event stream read, paced, watched, cut.

``ForwardedSse`` writes SSE to its client and the Ollama ``NdjsonRelay`` writes NDJSON
lines; what they read is the same: llama-server's event stream. ``UpstreamSseReader`` is
that shared half. It decodes the body into events and hands each one to the relay
(``_relay_event``), and it decides the upstream's failures the same way for both:

- an oversized event, a clean close or a reset before the relay's ending is
  ``_fail(what, cause)`` with the relay's own words for it;
- silence for ``idle_timeout`` is a stall. Before the first event ``:`` pings count as
  life (a long prompt is being processed); once events flow, a server that only pings
  is stuck. Time the relay itself holds the upstream back (a slow client) never counts,
  nor data that was waiting to be read when the timer fired (one more reactor turn);
- a slow client pauses the upstream socket (the relay is the client's push producer); a
  relay that ends aborts the upstream at once, or after its complete ending lets the
  body end by itself for a short grace, so the pooled connection is kept.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.iweb import IResponse

from server_core._twisted_compat import abort_body_transport
from server_core.sse.codec import Comment, SseDecoder

__all__ = ["DRAIN_GRACE", "UpstreamSseReader"]

DRAIN_GRACE = 5.0
"""Seconds an upstream may keep its body open after the ending before it is cut."""


class _UpstreamBody(Protocol):
    """Receives the upstream body and hands it to its reader; a bug still ends honestly."""

    def __init__(self, reader: UpstreamSseReader) -> None:
        self._reader = reader

    def connectionMade(self) -> None:
        # Agent hands a body protocol its TransportProxyProducer, an IPushProducer.
        self._reader._upstream = cast(IPushProducer, self.transport)

    def dataReceived(self, data: bytes) -> None:
        try:
            self._reader._upstream_data(data)
        except Exception as exc:
            self._reader._internal_failure(exc)

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        try:
            self._reader._upstream_lost(reason)
        except Exception as exc:
            self._reader._internal_failure(exc)


class UpstreamSseReader:
    """The reading half of a relay (module doc). A relay subclasses it and provides
    ``_open`` (it still wants upstream data), ``_relay_event``, ``_fail`` and
    ``_internal_failure``; it calls ``_reader_setup`` in its ``__init__``."""

    _upstream: IPushProducer | None

    def _reader_setup(self, clock: IReactorTime, idle_timeout: float | None) -> None:
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._decoder = SseDecoder()
        self._upstream = None  # the body transport, once delivered
        self._idle_call: IDelayedCall | None = None
        self._last_upstream = clock.seconds()
        self._paused = False
        self._events_read = 0
        self._idle_confirming = False

    # -- what the relay provides -------------------------------------------------------

    @property
    def _open(self) -> bool:
        raise NotImplementedError

    def _relay_event(self, event: Any) -> bool:
        """Relay one upstream event; False once the relay has ended."""
        raise NotImplementedError

    def _fail(self, what: str, cause: str) -> None:
        """End with the upstream's failure: ``what`` it did, ``cause`` for the metrics."""
        raise NotImplementedError

    def _internal_failure(self, exc: Exception) -> None:
        """A bug of ours while reading: end honestly all the same."""
        raise NotImplementedError

    # -- reading -----------------------------------------------------------------------

    def _start_reading(self, response: IResponse) -> None:
        if self._idle_timeout:
            self._idle_call = self._clock.callLater(self._idle_timeout, self._idle_due)
        response.deliverBody(_UpstreamBody(self))

    def _upstream_data(self, data: bytes) -> None:
        if not self._open:
            return
        try:
            items = self._decoder.feed(data)
        except ValueError:
            self._fail("sent an oversized SSE event", "malformed")
            return
        if self._events_read == 0 or not all(isinstance(i, Comment) for i in items):
            self._last_upstream = self._clock.seconds()
        for item in items:
            if isinstance(item, Comment):
                continue  # the relay's own keep-alive serves its client
            self._events_read += 1
            if not self._relay_event(item):
                return

    def _upstream_lost(self, reason: Failure) -> None:
        self._cancel_idle()
        self._upstream = None
        if not self._open:
            return
        if reason.check(ResponseDone):
            self._fail("closed the stream before it was complete", "upstream_closed")
        else:
            self._fail("connection lost in the middle of the stream", "upstream_reset")

    def _idle_due(self) -> None:
        self._idle_call = None
        if not self._open or self._idle_timeout is None:
            return
        if self._paused:
            self._last_upstream = self._clock.seconds()
        idle = self._clock.seconds() - self._last_upstream
        if idle >= self._idle_timeout:
            if not self._idle_confirming:
                # The reactor runs its timers before it reads: after the whole process
                # was stopped (SIGSTOP, a frozen VM) the data may be waiting in the
                # socket. Look again after one turn, once it has been read.
                self._idle_confirming = True
                self._idle_call = self._clock.callLater(0, self._idle_due)
                return
            self._fail(f"sent no data for {self._idle_timeout:g} s", "stall")
            return
        self._idle_confirming = False
        self._idle_call = self._clock.callLater(self._idle_timeout - idle, self._idle_due)

    # -- IPushProducer: the client's transport tells the relay to slow down ------------

    def pauseProducing(self) -> None:
        # While the relay holds the upstream back, its silence is ours: the idle clock stops.
        self._paused = True
        if self._upstream is not None:
            self._upstream.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self._last_upstream = self._clock.seconds()
        if self._upstream is not None:
            self._upstream.resumeProducing()

    def stopProducing(self) -> None:
        self._abort_upstream()

    # -- the upstream connection -------------------------------------------------------

    def _drain_upstream(self) -> None:
        # After the ending the body ends by itself; letting it keeps the pooled connection.
        # An upstream that keeps the body open anyway is cut after a short grace.
        self._cancel_idle()
        if self._upstream is not None:
            self._idle_call = self._clock.callLater(DRAIN_GRACE, self._abort_upstream)

    def _abort_upstream(self) -> None:
        self._cancel_idle()
        upstream, self._upstream = self._upstream, None
        abort_body_transport(upstream)

    def _cancel_idle(self) -> None:
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None
