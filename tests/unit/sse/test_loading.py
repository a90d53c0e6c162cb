"""LoadingPrelude and the writer's side of a hand-over, on a Clock and a recording request."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from server_core.errors import ContextError
from server_core.sse import Comment, Event, decode_all
from server_core.sse.dialects import MESSAGES, RESPONSES, Frame
from server_core.sse.loading import LoadingPrelude, loading_comment
from server_core.sse.writer import Ending, SseResponse, start_event_stream
from tests.unit.sse.support import Request


class BegunRequest(Request):
    """Sends its head at the first write, like Twisted's; a header set later is a bug."""

    def __init__(self) -> None:
        super().__init__()
        self.startedWriting = False
        self._disconnected = False

    def setHeader(self, name: Any, value: Any) -> None:
        assert not self.startedWriting, f"{name!r} set after the headers went out"
        super().setHeader(name, value)

    def setResponseCode(self, code: int, message: Any = None) -> None:
        assert not self.startedWriting, "status set after the headers went out"
        super().setResponseCode(code, message)

    def write(self, data: bytes) -> None:
        self.startedWriting = True
        super().write(data)

    def frames(self) -> list[Any]:
        return decode_all(b"".join(self.written))


def test_the_comment_says_what_is_awaited_on_one_line() -> None:
    assert loading_comment("m", 3.2, "starting") == b": loading model 'm' (3 s, starting)\n\n"
    assert loading_comment("m", 1, None) == b": loading model 'm' (1 s, queued)\n\n"
    assert loading_comment("m", 7, "ready") == b": waiting for model 'm' (7 s, ready)\n\n"
    (frame,) = decode_all(loading_comment("a\nb", 1, "starting"))
    assert isinstance(frame, Comment) and "a b" in frame.text


def test_a_writer_on_a_begun_response_sends_no_header_again() -> None:
    request, clock = BegunRequest(), Clock()
    start_event_stream(request)
    start_event_stream(request)  # idempotent
    out = SseResponse(request, clock, keepalive_interval=5.0, on_client_gone=lambda: None)
    out.begin(producer=object())  # type: ignore[arg-type]
    assert request.producer is not None
    out.send(b'data: {"a":1}\n\n')
    clock.advance(5.0)  # its keep-alive still runs
    out.end_done()
    assert out.ending is Ending.DONE and request.responseCode == 200
    assert [type(f).__name__ for f in request.frames()] == ["Event", "Comment", "Event"]


def test_a_wait_that_has_fired_arms_nothing() -> None:
    request, clock = BegunRequest(), Clock()
    prelude = LoadingPrelude(request, clock)
    d = defer.succeed("lease")
    assert prelude.watch(d, "m") is d
    assert clock.getDelayedCalls() == [] and not prelude.committed
    prelude.end_with(ContextError("x"), "start_failed")  # not committed: nothing to end
    assert request.written == [] and not request.finished


def test_comments_stop_when_the_client_leaves_and_its_wait_is_cancelled() -> None:
    request, clock = BegunRequest(), Clock()
    cancelled: list[object] = []
    waiting: defer.Deferred[Any] = defer.Deferred(cancelled.append)
    waiting.addErrback(lambda f: f.trap(defer.CancelledError))
    LoadingPrelude(request, clock, dialect=MESSAGES).watch(waiting, "m", progress=lambda: "x")
    clock.pump([1.0, 1.0])
    assert [f.text for f in request.frames()] == [
        "waiting for model 'm' (1 s, x)",
        "waiting for model 'm' (2 s, x)",
    ]
    request._disconnected = True
    request.processingFailed(Failure(ConnectionLost()))
    assert cancelled and clock.getDelayedCalls() == []


def test_a_bug_after_the_commit_is_one_error_event_with_an_id_only() -> None:
    request, clock = BegunRequest(), Clock()
    prelude = LoadingPrelude(request, clock, dialect=RESPONSES)
    prelude.watch(defer.Deferred(), "m")
    clock.advance(1.0)
    prelude.fail(KeyError("/secret/path"), replied=False)
    prelude.fail(ContextError("again"), replied=False)  # once ended, never again
    events = [f for f in request.frames() if isinstance(f, Event)]
    (event,) = events
    frame, payload = RESPONSES.read(event)
    assert frame is Frame.ERROR and payload["code"] == "internal_error"
    assert "error id" in payload["message"] and "secret" not in (event.data or "")
    assert request.finished and clock.getDelayedCalls() == []
