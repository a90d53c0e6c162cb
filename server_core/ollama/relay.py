"""NdjsonRelay: llama-server's SSE chat stream as Ollama's NDJSON stream, ended honestly.

The upstream body is decoded event by event (``sse.codec``) and judged by the chat
dialect (``sse.dialects.CHAT``); each event with text becomes one Ollama object on its own
line (``reply_bodies.StreamLines``). The three honest endings, Ollama's way:

- complete: ``[DONE]`` arrived, so the last line is ``"done": true`` with its
  ``done_reason`` and timings;
- the upstream failed before the first line: nothing was sent, so the relay fails with
  the error and the handler answers with its status and ``{"error": "..."}``;
- the upstream failed after the first line (reset, close before ``[DONE]``, an error
  event, malformed data, silence past ``idle_timeout``): one ``{"error": "..."}`` line,
  then close, never a ``"done": true``.

As in ``ForwardedSse``: the relay is the client transport's producer, so a slow client
pauses the upstream socket (and the idle clock); a client that leaves aborts the
upstream at once. There is no keep-alive line: Ollama clients parse every line as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.iweb import IResponse
from twisted.web.server import Request
from zope.interface import implementer

from server_core._twisted_compat import abort_body_transport
from server_core.errors import ServerCoreError, UpstreamError, internal_error, parse_error_object
from server_core.ollama.reply_bodies import Durations, StreamLines
from server_core.sse.codec import Comment, SseDecoder
from server_core.sse.dialects import CHAT, Frame
from server_core.sse.writer import Ending

__all__ = ["NDJSON", "NdjsonRelay", "ndjson_line"]

NDJSON = b"application/x-ndjson"
_DRAIN_GRACE = 5.0


def ndjson_line(payload: dict[str, Any]) -> bytes:
    """One object on one line (JSON escapes every line break inside strings)."""
    return json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n"


class _UpstreamBody(Protocol):
    """Receives the upstream body and hands it to the relay."""

    def __init__(self, relay: NdjsonRelay) -> None:
        self._relay = relay

    def connectionMade(self) -> None:
        # Agent hands a body protocol its TransportProxyProducer, an IPushProducer.
        self._relay._upstream = cast(IPushProducer, self.transport)

    def dataReceived(self, data: bytes) -> None:
        try:
            self._relay._upstream_data(data)
        except Exception as exc:
            self._relay.end_with(internal_error(exc, "NdjsonRelay"), cause="internal")

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        try:
            self._relay._upstream_lost(reason)
        except Exception as exc:
            self._relay.end_with(internal_error(exc, "NdjsonRelay"), cause="internal")


@implementer(IPushProducer)
class NdjsonRelay:
    """Relays one upstream chat or completion stream to one Ollama client (module doc)."""

    def __init__(
        self,
        request: Request,
        response: IResponse,
        lines: StreamLines,
        *,
        clock: IReactorTime,
        upstream_name: str,
        started: float,
        idle_timeout: float | None = 300.0,
        on_error: Callable[[ServerCoreError, str | None], None] | None = None,
    ) -> None:
        self._on_error = on_error
        self._request = request
        self._response = response
        self._lines = lines
        self._clock = clock
        self._upstream_name = upstream_name
        self._started = started
        self._answered = clock.seconds()
        self._idle_timeout = idle_timeout
        self._decoder = SseDecoder()
        self._upstream: IPushProducer | None = None
        self._idle_call: IDelayedCall | None = None
        self._last_upstream = self._answered
        self._paused = False
        self._begun = False
        self.ending: Ending | None = None
        self.lines_written = 0
        self._events = 0  # upstream events read (a first one may write no line)
        self._done: defer.Deferred[Ending] = defer.Deferred(self._cancelled)
        request.notifyFinish().addErrback(self._client_gone)

    def relay(self) -> defer.Deferred[Ending]:
        """Start; fires with how the stream ended, or fails with the error that ended it
        before its first line (nothing was sent: the caller answers with its status)."""
        if self._idle_timeout:
            self._idle_call = self._clock.callLater(self._idle_timeout, self._idle_due)
        self._response.deliverBody(_UpstreamBody(self))
        return self._done

    # -- IPushProducer: the client's transport tells us to slow down ------------

    def pauseProducing(self) -> None:
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

    # -- upstream side ------------------------------------------------------------

    def _upstream_data(self, data: bytes) -> None:
        if self.ending is not None:
            return
        try:
            items = self._decoder.feed(data)
        except ValueError:
            self._fail("sent an oversized SSE event", "malformed")
            return
        # Before the first event, ':' pings are life (a long prompt); once events flow, a
        # server that only pings is stuck (as ForwardedSse judges it).
        if self._events == 0 or not all(isinstance(i, Comment) for i in items):
            self._last_upstream = self._clock.seconds()
        for item in items:
            if isinstance(item, Comment):
                continue
            if not self._relay_event(item):
                return

    def _relay_event(self, event: Any) -> bool:
        """Relay one upstream event; False once the stream has ended."""
        frame, payload = CHAT.read(event)
        if frame is Frame.SKIP:
            return True
        if frame is Frame.ERROR:
            fields = parse_error_object(payload)
            message = fields.message or "error during generation"
            error = UpstreamError(f"{self._upstream_name}: {message}")
            self.end_with(error, cause="upstream_error")
            return False
        if frame is Frame.MALFORMED or (frame is Frame.DATA and not isinstance(payload, dict)):
            self._fail("sent a malformed event (invalid JSON)", "malformed")
            return False
        self._events += 1
        now = self._clock.seconds()
        if frame is Frame.COMPLETE:
            for line in self._lines.pending_calls(now):
                self._write(line)
            self._write(self._lines.done_line(now, self._durations(now)))
            self._end(Ending.DONE)
            self._drain_upstream()
            return False
        had_reason = self._lines.finish_reason is not None
        for line in self._lines.feed(payload, now):
            self._write(line)
        if not had_reason and self._lines.finish_reason is not None:
            for line in self._lines.pending_calls(now):
                self._write(line)
        return True

    def _durations(self, now: float) -> Durations:
        return Durations(total=now - self._started, load=self._answered - self._started)

    def _upstream_lost(self, reason: Failure) -> None:
        self._cancel_idle()
        self._upstream = None
        if self.ending is not None:
            return
        if reason.check(ResponseDone):
            self._fail("closed the stream before it was complete", "upstream_closed")
        else:
            self._fail("connection lost in the middle of the stream", "upstream_reset")

    def _idle_due(self) -> None:
        self._idle_call = None
        if self.ending is not None or self._idle_timeout is None:
            return
        if self._paused:
            self._last_upstream = self._clock.seconds()
        idle = self._clock.seconds() - self._last_upstream
        if idle >= self._idle_timeout:
            self._fail(f"sent no data for {self._idle_timeout:g} s", "stall")
            return
        self._idle_call = self._clock.callLater(self._idle_timeout - idle, self._idle_due)

    # -- the client side ----------------------------------------------------------

    def _begin(self) -> None:
        self._begun = True
        self._request.setResponseCode(200)
        self._request.setHeader(b"content-type", NDJSON)
        self._request.registerProducer(self, True)

    def _write(self, payload: dict[str, Any]) -> None:
        if self.ending is not None:
            return
        if not self._begun:
            self._begin()
        self._request.write(ndjson_line(payload))
        self.lines_written += 1

    def _fail(self, what: str, cause: str) -> None:
        error = UpstreamError(f"{self._upstream_name} {what}", code="upstream_stream_error")
        self.end_with(error, cause=cause)

    def end_with(self, error: ServerCoreError, *, cause: str | None = None) -> None:
        """End now with ``error``: one error line, or the error itself before the first
        line (used by the drain too). ``on_error`` hears of an error line first, with
        what broke the stream when the relay knows it (as ``ForwardedSse`` says it)."""
        if self.ending is not None:
            return
        self._abort_upstream()
        if self._begun and self._on_error is not None:
            self._on_error(error, cause)
        if not self._begun:
            self.ending = Ending.ERROR
            if not self._done.called:
                self._done.errback(error)
            return
        self._request.write(ndjson_line({"error": error.message}))
        self._end(Ending.ERROR)

    def _end(self, ending: Ending) -> None:
        # Only reached once a line is out: a complete stream wrote its done line.
        self.ending = ending
        self._request.unregisterProducer()
        self._request.finish()
        if not self._done.called:
            self._done.callback(ending)

    def _client_gone(self, reason: Failure) -> None:
        if self.ending is None:
            self.ending = Ending.CLIENT_GONE
            self._abort_upstream()
            if not self._done.called:
                self._done.callback(Ending.CLIENT_GONE)

    def _cancelled(self, _: defer.Deferred[Ending]) -> None:
        # The handler was cancelled (its client left): nothing more is written.
        if self.ending is None:
            self.ending = Ending.CLIENT_GONE
        self._abort_upstream()

    # -- the upstream connection --------------------------------------------------

    def _drain_upstream(self) -> None:
        # After [DONE] the body ends by itself; letting it keeps the pooled connection.
        self._cancel_idle()
        if self._upstream is not None:
            self._idle_call = self._clock.callLater(_DRAIN_GRACE, self._abort_upstream)

    def _abort_upstream(self) -> None:
        self._cancel_idle()
        upstream, self._upstream = self._upstream, None
        abort_body_transport(upstream)

    def _cancel_idle(self) -> None:
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None
