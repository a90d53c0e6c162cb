"""ForwardedSse driven by a Clock and a scripted upstream body: every ending honest."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from server_core.sse import Comment, Event, decode_all
from server_core.sse.dialects import CHAT
from server_core.sse.forwarded import ForwardedSse
from server_core.sse.writer import Ending
from tests.unit.sse.support import Request


class RealTransport:
    def __init__(self) -> None:
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class BodyTransport:
    """Stands in for Twisted's TransportProxyProducer around the upstream socket."""

    def __init__(self) -> None:
        self._producer = RealTransport()
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self._producer.aborted = True


class Response:
    code = 200

    def __init__(self) -> None:
        self.transport = BodyTransport()
        self.protocol: Any = None

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def end(self, reason: Failure | None = None) -> None:
        self.protocol.connectionLost(reason or Failure(ResponseDone()))


def chunk(i: int) -> bytes:
    payload = {"id": "c1", "choices": [{"delta": {"content": f" w{i}"}, "index": 0}]}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def start(**kw: Any) -> tuple[Request, Response, ForwardedSse, Clock, list[Ending]]:
    clock = Clock()
    request = Request()
    response = Response()
    relay = ForwardedSse(
        request,
        response,  # type: ignore[arg-type]
        clock=clock,
        upstream_name="upstream 'u'",
        keepalive_interval=kw.get("keepalive", 15.0),
        idle_timeout=kw.get("idle", 300.0),
        dialect=kw.get("dialect", CHAT),
        model_name=kw.get("model_name"),
        on_error=kw.get("on_error"),
        on_event=kw.get("on_event"),
    )
    endings: list[Ending] = []
    relay.relay().addCallback(endings.append)
    return request, response, relay, clock, endings


def events(request: Request) -> list[Any]:
    return decode_all(b"".join(request.written))


def error_events(request: Request) -> list[Event]:
    return [
        e
        for e in events(request)
        if isinstance(e, Event) and e.data and e.data != "[DONE]" and "error" in json.loads(e.data)
    ]


def assert_error_ending(request: Request, endings: list[Ending], response: Response) -> dict:
    out = events(request)
    assert not any(isinstance(e, Event) and e.is_done for e in out), "[DONE] after a failure"
    (err,) = error_events(request)
    assert out[-1] == err, "the error event must be the last frame"
    assert request.finished == 1
    assert endings == [Ending.ERROR]
    assert response.transport._producer.aborted
    return json.loads(err.data or "")["error"]


def test_headers_and_complete_stream() -> None:
    request, response, _, _, endings = start()
    assert request.responseHeaders.getRawHeaders(b"content-type") == [
        b"text/event-stream; charset=utf-8"
    ]
    assert request.responseHeaders.getRawHeaders(b"cache-control") == [b"no-cache"]
    assert request.responseHeaders.getRawHeaders(b"x-accel-buffering") == [b"no"]
    for i in range(3):
        response.send(chunk(i))
    response.send(b"data: [DONE]\n\n")
    response.end()
    out = events(request)
    assert [e.data for e in out if isinstance(e, Event)][-1] == "[DONE]"
    assert len(out) == 4
    assert request.finished == 1 and endings == [Ending.DONE]
    # After [DONE] the upstream ends by itself: the pooled connection is kept.
    assert not response.transport._producer.aborted


def test_clean_close_before_done_is_an_error_event() -> None:
    request, response, _, _, endings = start()
    response.send(chunk(0) + chunk(1))
    response.end(Failure(ResponseDone()))
    out = events(request)
    assert not any(isinstance(e, Event) and e.is_done for e in out)
    (e,) = error_events(request)
    assert "before it was complete" in json.loads(e.data or "")["error"]["message"]
    assert out[-1] == e
    assert request.finished == 1 and endings == [Ending.ERROR]


def test_reset_mid_frame_ends_at_a_frame_boundary() -> None:
    request, response, _, _, endings = start()
    response.send(chunk(0) + chunk(1)[:10])
    response.end(Failure(ConnectionLost()))
    raw = b"".join(request.written)
    assert raw.endswith(b"\n\n")
    out = events(request)
    assert len(out) == 2  # one relayed chunk, one error; the partial frame is dropped
    (e,) = error_events(request)
    assert "connection lost" in json.loads(e.data or "")["error"]["message"]
    assert endings == [Ending.ERROR]


def test_potential_data_loss_is_an_error() -> None:
    request, response, _, _, endings = start()
    response.send(chunk(0))
    response.end(Failure(PotentialDataLoss()))
    assert len(error_events(request)) == 1 and endings == [Ending.ERROR]


def test_stall_past_idle_timeout() -> None:
    request, response, _, clock, endings = start(idle=10.0, keepalive=None)
    response.send(chunk(0))
    clock.advance(9)
    response.send(chunk(1))
    clock.advance(9)
    assert endings == []
    clock.advance(1.5)
    error = assert_error_ending(request, endings, response)
    assert "sent no data for 10 s" in error["message"]
    assert not clock.getDelayedCalls()


def test_keepalive_comments_during_upstream_silence() -> None:
    request, response, _, clock, endings = start(keepalive=5.0, idle=60.0)
    clock.advance(4.9)
    assert [e for e in events(request) if isinstance(e, Comment)] == []
    clock.advance(0.2)
    assert [e for e in events(request) if isinstance(e, Comment)] == [Comment("keep-alive")]
    # An event resets the interval.
    clock.advance(3)
    response.send(chunk(0))
    clock.advance(4.5)
    assert len([e for e in events(request) if isinstance(e, Comment)]) == 1
    clock.advance(1)
    assert len([e for e in events(request) if isinstance(e, Comment)]) == 2
    response.send(b"data: [DONE]\n\n")
    response.end()
    assert endings == [Ending.DONE]
    assert not clock.getDelayedCalls()


def test_upstream_comments_are_not_relayed() -> None:
    request, response, _, _, _ = start()
    response.send(b": ping\n\n" + chunk(0))
    assert [type(e) for e in events(request)] == [Event]


def test_legacy_error_dialect_becomes_standard_error_without_done() -> None:
    request, response, _, _, endings = start()
    response.send(chunk(0))
    response.send(b'error: {"code":500,"message":"slot failed","type":"server_error"}\n\n')
    response.send(b"data: [DONE]\n\n")
    error = assert_error_ending(request, endings, response)
    assert error["message"].endswith("slot failed")
    assert error["type"] == "server_error"


def test_standard_error_event_ends_without_done() -> None:
    request, response, _, _, endings = start()
    response.send(chunk(0))
    response.send(b'data: {"error":{"code":500,"message":"boom","type":"server_error"}}\n\n')
    error = assert_error_ending(request, endings, response)
    assert "boom" in error["message"]


def test_malformed_json_event_is_an_error() -> None:
    request, response, _, _, endings = start()
    response.send(b"data: {not json\n\n")
    error = assert_error_ending(request, endings, response)
    assert "malformed" in error["message"]


def test_client_disconnect_aborts_upstream_and_writes_nothing_more() -> None:
    request, response, _, clock, endings = start()
    response.send(chunk(0))
    written = len(request.written)
    request.processingFailed(Failure(ConnectionLost()))
    assert response.transport._producer.aborted
    assert endings == [Ending.CLIENT_GONE]
    response.send(chunk(1))
    response.end(Failure(ConnectionLost()))
    assert len(request.written) == written
    assert request.finished == 0
    assert not clock.getDelayedCalls()


def test_slow_client_pauses_upstream() -> None:
    request, response, relay, _, _ = start()
    assert request.producer is relay
    relay.pauseProducing()
    assert response.transport.paused
    relay.resumeProducing()
    assert not response.transport.paused


def test_shutdown_ends_stream_with_error() -> None:
    from server_core.errors import ContextError

    request, response, relay, _, endings = start()
    response.send(chunk(0))
    relay.end_with(ContextError("shutting down"))
    assert_error_ending(request, endings, response)


@settings(max_examples=50)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
def test_any_chunking_relays_the_same_frames(cuts: list[int]) -> None:
    payload = b"".join(chunk(i) for i in range(5)).replace(b"\n", b"\r\n") + b"data: [DONE]\r\n\r\n"
    points = sorted({c % (len(payload) + 1) for c in cuts})
    request, response, _, _, endings = start()
    for a, b in zip([0, *points], [*points, len(payload)], strict=True):
        response.send(payload[a:b])
    expected = b"".join(chunk(i) for i in range(5)) + b"data: [DONE]\n\n"
    assert b"".join(request.written) == expected
    assert endings == [Ending.DONE]


def test_created_is_constant_within_a_stream() -> None:
    request, response, _, _, _ = start()
    for i, created in enumerate([100, 100, 101, 102]):
        payload = {"id": "c", "created": created, "choices": [{"delta": {"content": f"w{i}"}}]}
        response.send(b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n")
    spaced = {"id": "c", "created": 103, "choices": []}
    response.send(b"data: " + json.dumps(spaced).encode() + b"\n\n")
    out = [json.loads(e.data) for e in events(request) if isinstance(e, Event)]
    assert [o["created"] for o in out] == [100] * 5
    assert [o["choices"][0]["delta"]["content"] for o in out[:4]] == ["w0", "w1", "w2", "w3"]


def test_a_bug_in_the_relay_still_ends_with_one_error_event() -> None:
    request, response, relay, _, endings = start()
    response.send(chunk(0))

    def broken(*args: Any) -> str:
        raise RuntimeError("/internal/path bug")

    relay._same_created = broken  # type: ignore[method-assign]
    response.send(b'data: {"created": 1, "choices": []}\n\n')
    error = assert_error_ending(request, endings, response)
    assert "error id" in error["message"] and "/internal/path" not in error["message"]
    response.send(chunk(2))  # later upstream bytes change nothing
    assert len(error_events(request)) == 1


def test_relay_is_a_push_producer() -> None:
    from twisted.internet.interfaces import IPushProducer
    from zope.interface.verify import verifyObject

    _, _, relay, _, _ = start()
    assert verifyObject(IPushProducer, relay)


def test_idle_clock_stops_while_the_slow_client_holds_the_upstream() -> None:
    _, response, relay, clock, endings = start(idle=10.0, keepalive=None)
    response.send(chunk(0))
    relay.pauseProducing()  # the client's buffer is full
    clock.advance(30)
    assert endings == [], "the upstream was blamed for our own pause"
    relay.resumeProducing()
    clock.advance(9)
    assert endings == []
    clock.advance(1.5)
    assert endings == [Ending.ERROR]  # a real stall after the resume still counts


def test_pings_keep_prompt_processing_alive_but_not_a_stalled_generation() -> None:
    request, response, _, clock, endings = start(idle=10.0, keepalive=None)
    for _ in range(5):  # 40 s of prompt processing with pings: fine
        clock.advance(8)
        response.send(b":\n\n")
    assert endings == []
    response.send(chunk(0))
    for _ in range(2):  # generation started, then only pings: stuck
        clock.advance(6)
        response.send(b":\n\n")
    assert endings == [Ending.ERROR]
    assert (
        "sent no data for 10 s"
        in json.loads(error_events(request)[0].data or "")["error"]["message"]
    )
