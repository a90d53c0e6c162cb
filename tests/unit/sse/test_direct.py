"""DirectSse with a Clock: events, keep-alive, backpressure, failing source, client gone."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from server_core.errors import ContextError
from server_core.sse import Comment, Event, decode_all
from server_core.sse.direct import DirectEvent, DirectSse
from server_core.sse.writer import Ending
from tests.unit.sse.support import Request


class Source:
    """An async iterator fed by the test, one Deferred per pending event."""

    def __init__(self) -> None:
        self.pending: list[defer.Deferred[Any]] = []
        self.pulled = 0
        self.closed = False

    def __aiter__(self) -> AsyncIterator[DirectEvent]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[DirectEvent]:
        try:
            while True:
                d: defer.Deferred[Any] = defer.Deferred()
                self.pending.append(d)
                self.pulled += 1
                item = await d
                if item is None:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.closed = True

    def push(self, item: Any) -> None:
        self.pending.pop(0).callback(item)


def run(source: Source, **kw: Any) -> tuple[Request, DirectSse, Clock, list[Ending]]:
    clock = Clock()
    request = Request()
    sse = DirectSse(request, source.__aiter__(), clock=clock, keepalive_interval=5.0, **kw)
    endings: list[Ending] = []
    sse.run().addCallback(endings.append)
    return request, sse, clock, endings


def test_events_then_done() -> None:
    source = Source()
    request, _, _, endings = run(source)
    source.push(DirectEvent({"n": 1}))
    source.push(DirectEvent("plain", event="log", id="2"))
    source.push(None)
    out = decode_all(b"".join(request.written))
    assert out == [
        Event(data='{"n": 1}'),
        Event(data="plain", event="log", id="2"),
        Event(data="[DONE]"),
    ]
    assert endings == [Ending.DONE] and request.finished == 1


def test_keepalive_during_silence() -> None:
    source = Source()
    request, _, clock, _ = run(source)
    clock.advance(5)
    clock.advance(5)
    assert decode_all(b"".join(request.written)) == [Comment("keep-alive")] * 2
    source.push(None)
    assert not clock.getDelayedCalls()


def test_failing_source_ends_with_one_error_event() -> None:
    source = Source()
    request, _, _, endings = run(source)
    source.push(DirectEvent("a"))
    source.push(ContextError("model crashed"))
    out = decode_all(b"".join(request.written))
    assert out[0] == Event(data="a")
    assert json.loads(out[1].data)["error"]["message"] == "model crashed"  # type: ignore[union-attr]
    assert len(out) == 2 and endings == [Ending.ERROR]


def test_unexpected_exception_does_not_leak() -> None:
    source = Source()
    request, _, _, _ = run(source)
    source.push(RuntimeError("/etc/secret"))
    text = b"".join(request.written).decode()
    assert "secret" not in text and "error id" in text


def test_backpressure_stops_pulling() -> None:
    source = Source()
    _, sse, _, _ = run(source)
    sse.pauseProducing()
    source.push(DirectEvent("a"))
    assert source.pulled == 1 and not source.pending  # waits for resume before pulling
    sse.resumeProducing()
    assert source.pulled == 2
    source.push(None)


def test_client_gone_stops_source() -> None:
    source = Source()
    request, _, clock, endings = run(source)
    source.push(DirectEvent("a"))
    request.processingFailed(Failure(ConnectionLost()))
    assert endings == [Ending.CLIENT_GONE]
    assert source.closed
    assert request.finished == 0
    assert not clock.getDelayedCalls()


def test_no_done_marker_when_disabled() -> None:
    source = Source()
    request, _, _, endings = run(source, send_done=False)
    source.push(DirectEvent("line"))
    source.push(None)
    assert decode_all(b"".join(request.written)) == [Event(data="line")]
    assert endings == [Ending.DONE]


def test_direct_sse_is_a_push_producer() -> None:
    from twisted.internet.interfaces import IPushProducer
    from zope.interface.verify import verifyObject

    source = Source()
    _, sse, _, _ = run(source)
    assert verifyObject(IPushProducer, sse)
    source.push(None)
