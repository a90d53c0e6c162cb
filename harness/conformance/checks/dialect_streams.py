"""Helpers for the streams that do not end with ``[DONE]``: Responses, Messages, native.

Each event is classified by the dialect server_core's relay uses
(``server_core.sse.dialects``), so the suite and the relay agree on what a complete
ending, an honest final frame, an error and a malformed event are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from harness.client import StreamResult
from harness.conformance.checks.assertions import brief, fail
from server_core.sse.dialects import Frame, StreamDialect

__all__ = ["Seen", "event_names", "framing_problems", "read_frames", "require_ending"]

# How a body may end once the stream's last event has arrived: its framing finished, or
# (a close-delimited body) the server closed the connection.
_ENDED = ("complete", "closed")


@dataclass(frozen=True)
class Seen:
    """One event of a stream as the dialect reads it."""

    index: int
    frame: Frame
    name: str | None  # the ``event:`` field, else the payload's ``type``
    payload: Any


def read_frames(r: StreamResult, dialect: StreamDialect) -> list[Seen]:
    """Every stored event of ``r``, classified by ``dialect`` (bare events skipped)."""
    seen = []
    for i, ev in enumerate(r.events):
        frame, payload = dialect.read(ev)
        if frame is Frame.SKIP:
            continue
        kind = payload.get("type") if isinstance(payload, dict) else None
        name = ev.event or (kind if isinstance(kind, str) else None)
        seen.append(Seen(i, frame, name, payload))
    return seen


def event_names(seen: list[Seen]) -> list[str]:
    """The names of the events, ``?`` for an event without one."""
    return [s.name or "?" for s in seen]


def framing_problems(r: StreamResult, *, typed: StreamDialect | None = None) -> list[str]:
    """What is wrong with the framing: no data, non-JSON data, extra fields, names.

    ``typed``: every payload must carry a string ``type``, equal to the ``event:``
    field when there is one (the Responses and Messages APIs name every event); an
    error event (as this dialect reads it) is judged by the ending checks instead.
    """
    problems = []
    for i, ev in enumerate(r.events):
        if ev.extra:
            problems.append(f"event {i} has non-standard field(s) {[k for k, _ in ev.extra]}")
        if ev.data is None:
            problems.append(f"event {i} ({ev.event or 'unnamed'}) has no data field")
            continue
        why, payload = _parse(ev.data)
        if why is not None:
            problems.append(f"event {i} data is not a JSON object: {ev.data[:60]!r}")
            continue
        if typed is None or typed.read(ev)[0] is Frame.ERROR:
            continue
        kind = payload.get("type")
        if not isinstance(kind, str):
            problems.append(f"event {i} ({ev.event}) has no string type")
        elif ev.event is not None and ev.event != kind:
            problems.append(f"event {i}: event: {ev.event!r} but type {kind!r}")
    if not r.events:
        problems.append(f"no events: {brief(r)}")
    return problems


def _parse(data: str) -> tuple[str | None, dict[str, Any]]:
    """``(None, object)`` for a JSON object, else ``(why not, {})``."""
    try:
        obj = json.loads(data)
    except ValueError:
        return "not json", {}
    return (None, obj) if isinstance(obj, dict) else ("not an object", {})


def require_ending(r: StreamResult, dialect: StreamDialect, what: str) -> str:
    """Fail unless the stream's one complete frame (``what``) is its last event and the
    body ended after it; an error, an honest-but-failed final or malformed data fails."""
    seen = read_frames(r, dialect)
    bad = [s for s in seen if s.frame in (Frame.ERROR, Frame.FINAL, Frame.MALFORMED)]
    if bad:
        s = bad[0]
        raise fail(f"event {s.index} ({s.name or '?'}) is {s.frame.value}: {str(s.payload)[:80]}")
    complete = [s for s in seen if s.frame is Frame.COMPLETE]
    if not complete:
        raise fail(f"no {what} in {len(r.events)} events ({brief(r)})")
    if len(complete) > 1:
        raise fail(f"{len(complete)} {what} events")
    last = complete[0].index
    if last != len(r.events) - 1 or r.n_events != len(r.events):
        after = event_names(read_frames(r, dialect))[-1]
        raise fail(f"{what} is event {last}, then {r.n_events - last - 1} more (last {after})")
    if r.end_reason not in _ENDED:
        raise fail(f"the body did not end after {what} (end={r.end_reason})")
    return f"{what} is event {last + 1} of {r.n_events}, body ended"
