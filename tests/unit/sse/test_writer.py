"""SseResponse on a Clock: headers, keep-alive, and each of the three endings exactly once."""

from __future__ import annotations

import json

from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from server_core.errors import ContextError
from server_core.sse import Comment, Event, SseResponse, decode_all, encode_event
from server_core.sse.writer import Ending
from tests.unit.sse.support import Request


class Owner:
    """Stands in for DirectSse / ForwardedSse: counts the client-gone callbacks."""

    def __init__(self) -> None:
        self.gone = 0

    def on_client_gone(self) -> None:
        self.gone += 1


def start(
    keepalive: float | None = 5.0,
) -> tuple[Request, SseResponse, Clock, Owner, list[Ending]]:
    clock = Clock()
    request = Request()
    owner = Owner()
    out = SseResponse(
        request,  # type: ignore[arg-type]
        clock,
        keepalive_interval=keepalive,
        on_client_gone=owner.on_client_gone,
    )
    out.begin(producer=owner)  # type: ignore[arg-type]
    endings: list[Ending] = []
    out.when_ended().addCallback(endings.append)
    return request, out, clock, owner, endings


def frames(request: Request) -> list[Event | Comment]:
    return decode_all(b"".join(request.written))


def test_begin_sends_event_stream_headers_at_once() -> None:
    request, out, _, owner, _ = start()
    assert request.responseCode == 200
    assert request.responseHeaders.getRawHeaders(b"content-type") == [
        b"text/event-stream; charset=utf-8"
    ]
    assert request.responseHeaders.getRawHeaders(b"cache-control") == [b"no-cache"]
    assert request.responseHeaders.getRawHeaders(b"x-accel-buffering") == [b"no"]
    assert request.written == [b""]  # the headers are flushed before any event
    assert request.producer is owner
    assert out.is_open and out.ending is None


def test_done_ends_once_with_the_marker() -> None:
    request, out, clock, _, endings = start()
    out.send(encode_event("a"))
    out.end_done()
    out.end_done()
    out.end_error(ContextError("too late"))
    out.send(encode_event("b"))
    assert frames(request) == [Event(data="a"), Event(data="[DONE]")]
    assert endings == [Ending.DONE] and out.ending is Ending.DONE and not out.is_open
    assert request.finished == 1 and request.producer is None
    assert out.frames_written == 1
    assert not clock.getDelayedCalls()


def test_done_without_marker() -> None:
    request, out, _, _, endings = start()
    out.send(encode_event("line"))
    out.end_done(marker=False)
    assert frames(request) == [Event(data="line")]
    assert endings == [Ending.DONE] and request.finished == 1


def test_error_is_one_event_and_never_done() -> None:
    request, out, clock, _, endings = start()
    out.end_error(ContextError("model crashed"))
    out.end_done()
    (event,) = frames(request)
    assert isinstance(event, Event) and event.data is not None
    assert json.loads(event.data)["error"]["message"] == "model crashed"
    assert endings == [Ending.ERROR] and request.finished == 1
    assert not clock.getDelayedCalls()


def test_when_ended_after_the_end_fires_at_once() -> None:
    _, out, _, _, _ = start()
    out.end_done()
    late: list[Ending] = []
    out.when_ended().addCallback(late.append)
    assert late == [Ending.DONE]


def test_keepalive_fills_only_silences() -> None:
    request, out, clock, _, _ = start(keepalive=5.0)
    clock.advance(5)
    assert frames(request) == [Comment("keep-alive")]
    clock.advance(3)
    out.send(encode_event("a"))
    clock.advance(4)  # 4 s since the event: not yet silent for 5 s
    assert frames(request) == [Comment("keep-alive"), Event(data="a")]
    clock.advance(1)
    assert frames(request) == [Comment("keep-alive"), Event(data="a"), Comment("keep-alive")]
    out.end_done()
    assert not clock.getDelayedCalls()


def test_no_keepalive_when_disabled() -> None:
    for interval in (None, 0.0):
        _, out, clock, _, _ = start(keepalive=interval)
        assert not clock.getDelayedCalls()
        out.end_done()


def test_client_gone_tells_the_owner_once_and_writes_nothing_more() -> None:
    request, out, clock, owner, endings = start()
    request.processingFailed(Failure(ConnectionLost()))
    out.send(encode_event("a"))
    out.end_done()
    out.end_error(ContextError("late"))
    assert owner.gone == 1
    assert endings == [Ending.CLIENT_GONE]
    assert request.written == [b""] and request.finished == 0
    assert not clock.getDelayedCalls()


def test_an_owner_failing_to_abort_is_logged_not_raised() -> None:
    clock = Clock()
    request = Request()

    def broken() -> None:
        raise RuntimeError("abort failed")

    out = SseResponse(
        request,  # type: ignore[arg-type]
        clock,
        keepalive_interval=None,
        on_client_gone=broken,
    )
    out.begin()
    with capturedLogs() as logs:
        request.processingFailed(Failure(ConnectionLost()))
    assert out.ending is Ending.CLIENT_GONE
    assert any(e.get("log_failure") is not None for e in logs)
