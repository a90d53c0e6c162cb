"""The verdict vocabulary and ``StreamResult``, everything observed about one response.

``outcome`` says how the response ended (one of ``OUTCOMES``); ``end_reason`` says how
the transport ended (one of the ``END_*`` values). The rules that pick them live in
``_classify``; this module only names them and holds the record the caller reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server_core.sse import Event

__all__ = [
    "CONNECT_ERROR",
    "DEFAULT_BODY_LIMIT",
    "DISCONNECTED",
    "DONE",
    "END_CLIENT_ABORT",
    "END_CLOSED",
    "END_COMPLETE",
    "END_CONNECT_FAILED",
    "END_IDLE_TIMEOUT",
    "END_LOST",
    "END_NO_RESPONSE",
    "END_TIMEOUT",
    "ERROR_EVENT",
    "FINAL_EVENT",
    "HTTP_ERROR",
    "OUTCOMES",
    "TIMEOUT",
    "TRUNCATED",
    "StreamResult",
]

DONE = "done"
ERROR_EVENT = "error_event"
HTTP_ERROR = "http_error"
TRUNCATED = "truncated"
TIMEOUT = "timeout"
CONNECT_ERROR = "connect_error"
DISCONNECTED = "disconnected"
# The dialect's honest ending that is not a success (Responses ``response.failed`` /
# ``response.incomplete``): the stream ended properly, the answer did not come.
FINAL_EVENT = "final_event"
OUTCOMES = frozenset(
    {DONE, ERROR_EVENT, FINAL_EVENT, HTTP_ERROR, TRUNCATED, TIMEOUT, CONNECT_ERROR, DISCONNECTED}
)

# end_reason values: how the body (or the attempt) ended at the transport level.
END_COMPLETE = "complete"  # body framing finished (Content-Length / last chunk)
END_CLOSED = "closed"  # close-delimited body ended by a close (PotentialDataLoss)
END_LOST = "lost"  # connection lost or reset before the body framing finished
END_TIMEOUT = "timeout"  # total timeout expired, we aborted
END_IDLE_TIMEOUT = "idle_timeout"  # nothing arrived for idle_timeout seconds, we aborted
END_CLIENT_ABORT = "client_abort"  # disconnect_after reached, we aborted
END_NO_RESPONSE = "no_response"  # connected, but the connection died before headers
END_CONNECT_FAILED = "connect_failed"  # never connected

DEFAULT_BODY_LIMIT = 1 << 20


def _since(start: float, t: float | None) -> float | None:
    return None if t is None else t - start


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


@dataclass(eq=False)
class StreamResult:
    """Everything observed about one response. Times are seconds on one clock."""

    outcome: str = TRUNCATED
    dialect: str = "chat"  # the stream dialect the body was judged by (dialects.py names)
    status: int | None = None
    headers: dict[str, list[str]] = field(default_factory=dict)
    # Decoded SSE events (comments excluded), [DONE] and error frames included; for an
    # NDJSON (Ollama) stream one event per line, its ``data`` the line.
    events: list[Event] = field(default_factory=list)
    event_times: list[float] = field(default_factory=list)  # arrival time of events[i]
    n_events: int = 0  # all events seen, also those beyond max_events
    comments: int = 0
    body: bytes | None = None  # non-SSE bodies only (capped at body_limit)
    error: dict[str, Any] | None = None
    chunks: list[dict[str, Any]] = field(default_factory=list)
    json_body: Any = None  # parsed non-stream body
    text: str = ""
    reasoning: str = ""  # choices[0].delta.reasoning_content (reasoning models)
    finish_reason: str | None = None
    model: str | None = None
    ids: set[str] = field(default_factory=set)
    usage: dict[str, Any] | None = None
    # Ollama's counts and durations (ns) of the done line or the whole body:
    # total_duration, load_duration, prompt_eval_count/_duration, eval_count/_duration.
    timings: dict[str, Any] = field(default_factory=dict)
    t_start: float = 0.0
    t_headers: float | None = None
    t_first_byte: float | None = None
    t_first_token: float | None = None
    t_end: float | None = None
    gaps: list[float] = field(default_factory=list)
    bytes_received: int = 0
    after_done: bool = False  # anything arrived after the complete ending (violation)
    done_after_error: bool = False  # a complete ending after an error event (violation)
    final_event: str | None = None  # the name of a FINAL ending (``response.failed``, ...)
    after_error: bool = False  # another data event after an error event (violation)
    invalid_json: int = 0  # data events that are not a JSON object
    end_reason: str | None = None  # see END_* constants
    exception: str | None = None  # short description of a transport failure

    @property
    def ok(self) -> bool:
        """The response ended the one fully successful way (``done``)."""
        return self.outcome == DONE

    @property
    def is_sse(self) -> bool:
        """The response declared itself an event stream (``text/event-stream``)."""
        ctype = self.headers.get("content-type", [""])[-1]
        return ctype.split(";", 1)[0].strip().lower() == "text/event-stream"

    @property
    def is_ndjson(self) -> bool:
        """The response declared itself NDJSON (``application/x-ndjson``: Ollama's streams)."""
        ctype = self.headers.get("content-type", [""])[-1]
        return ctype.split(";", 1)[0].strip().lower() == "application/x-ndjson"

    @property
    def is_stream(self) -> bool:
        """The body was read as a stream of events: SSE or NDJSON."""
        return self.is_sse or self.is_ndjson

    @property
    def ttfb(self) -> float | None:
        """Request start to the first body byte."""
        return _since(self.t_start, self.t_first_byte)

    @property
    def ttft(self) -> float | None:
        """Request start to the first chunk carrying non-empty text (or reasoning)."""
        return _since(self.t_start, self.t_first_token)

    @property
    def header_latency(self) -> float | None:
        """Request start to the response headers."""
        return _since(self.t_start, self.t_headers)

    @property
    def duration(self) -> float | None:
        """Request start to the moment the result was decided."""
        return _since(self.t_start, self.t_end)

    @property
    def max_gap(self) -> float | None:
        """The longest silence between two consecutive events."""
        return max(self.gaps) if self.gaps else None

    def summary(self) -> dict[str, Any]:
        """A compact JSON-serialisable view for reports."""
        err = None
        if self.error is not None:
            err = {k: self.error.get(k) for k in ("code", "type", "message") if k in self.error}
        return {
            "outcome": self.outcome,
            "dialect": self.dialect,
            "status": self.status,
            "end_reason": self.end_reason,
            "events": self.n_events,
            "comments": self.comments,
            "chunks": len(self.chunks),
            "text_len": len(self.text),
            "finish_reason": self.finish_reason,
            "model": self.model,
            "ids": len(self.ids),
            "ttfb": _rounded(self.ttfb),
            "ttft": _rounded(self.ttft),
            "duration": _rounded(self.duration),
            "max_gap": _rounded(self.max_gap),
            "bytes": self.bytes_received,
            "final_event": self.final_event,
            "after_done": self.after_done,
            "done_after_error": self.done_after_error,
            "after_error": self.after_error,
            "invalid_json": self.invalid_json,
            "error": err,
            "exception": self.exception,
        }
