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

The reading half is ``ForwardedSse``'s (``sse.upstream_reader``): the relay is the client
transport's producer, so a slow client pauses the upstream socket (and the idle clock),
a client that leaves aborts the upstream at once, and the upstream's failures are judged
alike. There is no keep-alive line: Ollama clients parse every line as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.python.failure import Failure
from twisted.web.iweb import IResponse
from twisted.web.server import Request
from zope.interface import implementer

from server_core.errors import ServerCoreError, UpstreamError, internal_error, parse_error_object
from server_core.ollama.reply_bodies import Durations, StreamLines
from server_core.sse.dialects import CHAT, Frame
from server_core.sse.upstream_reader import UpstreamSseReader
from server_core.sse.writer import Ending

__all__ = ["NDJSON", "NdjsonRelay", "ndjson_line"]

NDJSON = b"application/x-ndjson"


def ndjson_line(payload: dict[str, Any]) -> bytes:
    """One object on one line (JSON escapes every line break inside strings)."""
    return json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n"


@implementer(IPushProducer)
class NdjsonRelay(UpstreamSseReader):
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
        self._upstream_name = upstream_name
        self._started = started
        self._answered = clock.seconds()
        self._reader_setup(clock, idle_timeout)
        self._begun = False
        self.ending: Ending | None = None
        self.lines_written = 0
        self._done: defer.Deferred[Ending] = defer.Deferred(self._cancelled)
        request.notifyFinish().addErrback(self._client_gone)

    def relay(self) -> defer.Deferred[Ending]:
        """Start; fires with how the stream ended, or fails with the error that ended it
        before its first line (nothing was sent: the caller answers with its status)."""
        self._start_reading(self._response)
        return self._done

    # -- reading (UpstreamSseReader) ------------------------------------------------------

    @property
    def _open(self) -> bool:
        return self.ending is None

    def _internal_failure(self, exc: Exception) -> None:
        self.end_with(internal_error(exc, "NdjsonRelay"), cause="internal")

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
