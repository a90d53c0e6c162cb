"""What the response body said so far: the SSE sequencing rules and the non-SSE buffer.

``BodyState`` is fed decoded events (or raw bytes of a non-SSE body) and records them
into the ``StreamResult``: storage capped at ``max_events``, inter-event gaps, and the
violations of "one honest ending". What an event means comes from the request's stream
dialect (``server_core.sse.dialects``: ``dialect.read(event)``): its complete ending
(``[DONE]``, ``response.completed``, ``message_stop``, ``"stop": true``), its other
honest ending (``response.failed``/``response.incomplete``), its error event. The
violations: anything after the ending, an ending after an error, data after an error,
data that is not a JSON object. An NDJSON body (Ollama's streams, ``_ndjson``) is read
the same way, one event per line, by the ``OLLAMA`` dialect. It knows no sockets or
timers: ``_call`` feeds it and ``_classify`` reads it. Per-event work stays small (one
``json.loads`` per data event) and a stream body is never buffered whole.
"""

from __future__ import annotations

import json
from typing import Any

from harness.client._chunks import Transcript
from harness.client._errors import error_of_event, parse_legacy_error
from harness.client._ndjson import OLLAMA, NdjsonDecoder
from harness.client._result import END_COMPLETE, StreamResult
from server_core.sse import Event, SseDecoder
from server_core.sse.dialects import CHAT, Frame, StreamDialect

__all__ = ["BodyState"]


class BodyState:
    """The body of one response as interpreted so far, and what ``classify`` judges."""

    def __init__(
        self,
        result: StreamResult,
        max_events: int | None,
        body_limit: int,
        dialect: StreamDialect = CHAT,
    ) -> None:
        self.result = result
        self.dialect = dialect
        result.dialect = dialect.name
        self.max_events = max_events
        self.body_limit = body_limit
        self.transcript = Transcript(result)
        # Set for a 2xx event stream (SSE) or line stream (NDJSON) only.
        self.decoder: SseDecoder | NdjsonDecoder | None = None
        self.buf = bytearray()  # a non-SSE body, capped at body_limit
        self.http_error = False
        self.done_seen = False  # the complete (or FINAL) ending arrived
        self.final_seen = False  # ... and it was the FINAL one (not a success)
        self.error_seen = False
        self._last_event_t: float | None = None

    def begin(self, status: int) -> None:
        """Headers are in: decide how the body will be read."""
        self.http_error = not 200 <= status < 300
        if self.http_error:
            return
        if self.result.is_sse:
            self.decoder = SseDecoder()
        elif self.result.is_ndjson:
            # NDJSON streams are Ollama's: its rules judge them, whatever the path said.
            self.decoder = NdjsonDecoder()
            self.dialect = OLLAMA
            self.result.dialect = OLLAMA.name

    def arrived(self, data: bytes, t: float) -> None:
        """Count body bytes; a non-SSE body is also kept, up to ``body_limit``."""
        r = self.result
        if r.t_first_byte is None:
            r.t_first_byte = t
        r.bytes_received += len(data)
        if self.decoder is None:
            room = self.body_limit - len(self.buf)
            if room > 0:
                self.buf += data[:room]

    def on_comment(self) -> None:
        """A comment frame (keep-alive ping): counted, and a violation after the ending."""
        self.result.comments += 1
        if self.done_seen:
            self.result.after_done = True

    def on_event(self, ev: Event, t: float) -> None:
        """Record one event that arrived at ``t`` and apply the sequencing rules."""
        r = self.result
        keep = self._record(ev, t)
        if self.done_seen:
            r.after_done = True
            return
        frame, payload = self.dialect.read(ev)
        if frame is Frame.SKIP:
            return
        if frame in (Frame.COMPLETE, Frame.FINAL):
            self._ending(frame, ev, payload, keep, t)
            return
        if self.error_seen:
            r.after_error = True
        if frame is Frame.ERROR:
            legacy = ev.get("error")
            self.set_error(
                error_of_event(payload) if legacy is None else parse_legacy_error(legacy)
            )
            return
        if not isinstance(payload, dict):  # MALFORMED, or JSON that is not an object
            r.invalid_json += 1
            return
        self._absorb(payload, keep, t)

    def _ending(self, frame: Frame, ev: Event, payload: Any, keep: bool, t: float) -> None:
        """The stream's ending: after an error it is a violation; its payload (native's
        last event, ``response.completed``) still carries text, usage or the model."""
        self.done_seen = True
        self.final_seen = frame is Frame.FINAL
        if self.final_seen:
            self.result.final_event = ev.event or (
                payload.get("type") if isinstance(payload, dict) else None
            )
        if self.error_seen:
            self.result.done_after_error = True
        elif isinstance(payload, dict):
            self._absorb(payload, keep, t)

    def _absorb(self, obj: dict[str, Any], keep: bool, t: float) -> None:
        if keep:
            self.result.chunks.append(obj)
        self.transcript.absorb(obj, t, stream=True)

    def set_error(self, err: dict[str, Any]) -> None:
        """Remember the first error the server reported; later ones do not replace it."""
        if not self.error_seen:
            self.error_seen = True
            self.result.error = err

    def note_leftover(self) -> None:
        """The body is over: a partial frame after the ending is a violation too."""
        if self.decoder is not None and self.done_seen and self.decoder.buffered:
            self.result.after_done = True

    def end(self, t: float) -> None:
        """The body ended on its own at ``t``; flush the decoder.

        An NDJSON line without its newline still counts when the body's framing finished
        (the server meant it) or it is a whole JSON value; a line cut by a lost
        connection is just the truncation it looks like."""
        if self.decoder is None:
            return
        self.note_leftover()
        if self.done_seen or not isinstance(self.decoder, NdjsonDecoder):
            self.decoder.finish()
            return
        for item in self.decoder.finish():
            if isinstance(item, Event) and (
                self.result.end_reason == END_COMPLETE or _is_json(item.data)
            ):
                self.on_event(item, t)

    def _record(self, ev: Event, t: float) -> bool:
        """Count, time and (below ``max_events``) store ``ev``; True if it was stored."""
        r = self.result
        r.n_events += 1
        keep = self.max_events is None or len(r.events) < self.max_events
        if keep:
            r.events.append(ev)
            r.event_times.append(t)
        if self._last_event_t is not None:
            r.gaps.append(t - self._last_event_t)
        self._last_event_t = t
        return keep


def _is_json(text: str | None) -> bool:
    try:
        json.loads(text or "")
    except ValueError:
        return False
    return True
