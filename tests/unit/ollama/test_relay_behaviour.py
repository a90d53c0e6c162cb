"""NdjsonRelay behaviour the mutation run (issue 18) found unpinned, each on a Clock.

What ``on_error`` hears (the metrics record's cause), the codes of the errors, the
relay's own ``ending`` and line count, a relay cancelled by its handler, a bug of ours
while relaying, what follows an ending inside the same upstream read, tool calls flushed
when the finish reason arrives or at ``[DONE]``, the default idle timeout, the
``load_duration`` of a stream without timings and the push-producer registration.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from server_core.errors import ContextError, InternalError, ServerCoreError, UpstreamError
from server_core.ollama.relay import NdjsonRelay, ndjson_line
from server_core.ollama.reply_bodies import StreamLines, created_at
from server_core.sse.writer import Ending
from tests.unit.ollama.test_relay import DONE, FINAL, chunk, text
from tests.unit.sse.support import Request
from tests.unit.sse.test_forwarded import Response

ARRIVED = 9.0  # the request's arrival; the relay is built (the upstream answered) at 10.0


class PushRequest(Request):
    """Also records whether the producer was registered as a push (streaming) producer."""

    def __init__(self) -> None:
        super().__init__()
        self.streaming: Any = None

    def registerProducer(self, prod: Any, s: Any) -> None:
        self.producer, self.streaming = prod, s


class BrokenLines(StreamLines):
    """A StreamLines with a bug: a chunk whose text is `boom` raises."""

    def feed(self, chunk: dict[str, Any], now: float) -> list[dict[str, Any]]:
        if "boom" in json.dumps(chunk):
            raise RuntimeError("a bug while building a line")
        return super().feed(chunk, now)


class Relay:
    """One NdjsonRelay with its request, scripted upstream, clock and everything it reports."""

    def __init__(self, *, lines: StreamLines | None = None, **kw: Any) -> None:
        self.clock = Clock()
        self.clock.advance(10.0)
        self.request = PushRequest()
        self.response = Response()
        self.stream_lines = lines or StreamLines("chat", "m:latest")
        self.errors: list[tuple[ServerCoreError, str | None]] = []
        self.relay = NdjsonRelay(
            self.request,  # type: ignore[arg-type]
            self.response,  # type: ignore[arg-type]
            self.stream_lines,
            clock=self.clock,
            upstream_name="model 'm'",
            started=ARRIVED,
            on_error=lambda error, cause: self.errors.append((error, cause)),
            **kw,
        )
        self.endings: list[Ending] = []
        self.failures: list[BaseException] = []
        self.done = self.relay.relay()
        self.done.addCallbacks(self.endings.append, lambda f: self.failures.append(f.value))

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in b"".join(self.request.written).splitlines()]

    @property
    def upstream_aborted(self) -> bool:
        return bool(self.response.transport._producer.aborted)

    def causes(self) -> list[str | None]:
        return [cause for _, cause in self.errors]


def failures_of(into: list[BaseException]) -> Any:
    def record(failure: Failure) -> None:
        assert failure.value is not None
        into.append(failure.value)

    return record


def error_payload(message: str = "slot died") -> bytes:
    error = {"error": {"code": 500, "message": message, "type": "server_error"}}
    return b"data: " + json.dumps(error).encode() + b"\n\n"


def failures_logged(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [e for e in logs if e.get("log_failure") is not None]


# -- what on_error hears: every mid-stream ending, with its cause ---------------------------


def test_on_error_hears_an_upstream_error_event_as_upstream_error() -> None:
    run = Relay()
    run.response.send(text(1) + error_payload("slot died"))
    ((error, cause),) = run.errors
    assert cause == "upstream_error"
    assert isinstance(error, UpstreamError) and error.message == "model 'm': slot died"
    assert run.lines()[-1] == {"error": "model 'm': slot died"}


def test_on_error_hears_a_malformed_event_as_malformed_with_the_stream_error_code() -> None:
    run = Relay()
    run.response.send(text(1) + b"data: {not json\n\n")
    ((error, cause),) = run.errors
    assert cause == "malformed" and error.code == "upstream_stream_error"
    assert error.message == "model 'm' sent a malformed event (invalid JSON)"
    assert run.lines()[-1] == {"error": error.message}


def test_on_error_hears_a_json_event_that_is_no_object_as_malformed() -> None:
    run = Relay()
    run.response.send(text(1) + b"data: [1, 2]\n\n")
    assert run.causes() == ["malformed"] and run.relay.ending is Ending.ERROR


def test_on_error_hears_a_clean_close_and_a_reset_apart() -> None:
    closed = Relay()
    closed.response.send(text(1))
    closed.response.end()
    reset = Relay()
    reset.response.send(text(1))
    reset.response.end(Failure(ConnectionLost()))
    assert closed.causes() == ["upstream_closed"] and reset.causes() == ["upstream_reset"]
    for run in (closed, reset):
        ((error, _),) = run.errors
        assert error.code == "upstream_stream_error" and error.status == 502


def test_on_error_hears_a_stall_as_stall() -> None:
    run = Relay(idle_timeout=30.0)
    run.response.send(text(1))
    run.clock.advance(30.0)
    run.clock.advance(0)  # the one turn the verdict waits for data already in the socket
    ((error, cause),) = run.errors
    assert cause == "stall" and error.message == "model 'm' sent no data for 30 s"
    assert run.upstream_aborted


def test_on_error_hears_a_drain_without_a_cause() -> None:
    run = Relay()
    run.response.send(text(1))
    shutdown = ContextError("The server is shutting down; retry the request.")
    run.relay.end_with(shutdown)
    assert run.errors == [(shutdown, None)]


def test_on_error_is_not_called_when_the_error_itself_is_the_answer() -> None:
    # Before the first line the handler answers with the error: no error line to record.
    run = Relay()
    run.response.send(error_payload("no slot"))
    assert run.errors == [] and run.request.written == []
    (error,) = run.failures
    assert isinstance(error, UpstreamError) and error.message == "model 'm': no slot"


def test_failure_before_the_first_line_carries_the_stream_error_code() -> None:
    run = Relay()
    run.response.end(Failure(ConnectionLost()))
    (error,) = run.failures
    assert isinstance(error, UpstreamError) and error.code == "upstream_stream_error"
    assert error.message == "model 'm' connection lost in the middle of the stream"


# -- the relay's own record of its ending --------------------------------------------------


def test_failure_before_the_first_line_ends_the_relay_so_later_data_writes_nothing() -> None:
    run = Relay()
    run.response.send(b"data: {broken\n\n")
    assert run.relay.ending is Ending.ERROR
    run.response.send(text(1) + DONE)  # an upstream that goes on anyway is not relayed
    assert run.request.written == [] and not run.request.finished
    assert run.endings == [] and len(run.failures) == 1


def test_lines_written_counts_every_object_line_of_the_stream() -> None:
    run = Relay()
    assert run.relay.lines_written == 0
    run.response.send(text(1) + text(2))
    assert run.relay.lines_written == 2
    run.response.send(FINAL + DONE)
    assert run.relay.lines_written == len(run.lines()) == 3


def test_relay_registers_as_the_clients_streaming_push_producer() -> None:
    run = Relay()
    run.response.send(text(1))
    assert run.request.producer is run.relay and run.request.streaming is True


def test_non_ascii_text_goes_out_as_utf8_not_escapes() -> None:
    run = Relay()
    run.response.send(chunk({"content": "blåbær 日本"}) + DONE)
    raw = b"".join(run.request.written)
    assert "blåbær 日本".encode() in raw and b"\\u" not in raw
    assert ndjson_line({"a": "é"}) == '{"a": "é"}\n'.encode()


# -- the handler cancelling the relay (its client left) ---------------------------------------


def test_cancelled_relay_aborts_the_upstream_and_relays_nothing_more() -> None:
    run = Relay()
    run.response.send(text(1))
    written = list(run.request.written)
    run.done.cancel()
    assert isinstance(run.failures[0], defer.CancelledError)
    assert run.upstream_aborted and run.relay.ending is Ending.CLIENT_GONE
    run.response.send(text(2) + DONE)
    assert run.request.written == written and not run.request.finished


def test_cancelled_before_the_first_line_aborts_the_upstream() -> None:
    run = Relay()
    run.done.cancel()
    assert run.upstream_aborted and run.relay.ending is Ending.CLIENT_GONE
    run.response.send(text(1) + DONE)
    assert run.request.written == []


# -- a bug of ours while relaying ---------------------------------------------------------------


def test_a_bug_mid_stream_is_one_internal_error_line_and_is_logged_with_its_place() -> None:
    run = Relay(lines=BrokenLines("chat", "m:latest"))
    run.response.send(text(1))
    with capturedLogs() as logs:
        run.response.send(chunk({"content": "boom"}) + DONE)
    lines = run.lines()
    assert len(lines) == 2 and "internal error" in lines[-1]["error"]
    assert not any(line.get("done") is True for line in lines)
    ((error, cause),) = run.errors
    assert cause == "internal" and isinstance(error, InternalError)
    (logged,) = failures_logged(logs)
    assert logged["where"] == "NdjsonRelay" and logged["error_id"] in error.message
    assert isinstance(logged["log_failure"].value, RuntimeError)
    assert run.upstream_aborted and run.endings == [Ending.ERROR]


def test_a_bug_before_the_first_line_is_the_internal_error_itself() -> None:
    run = Relay(lines=BrokenLines("chat", "m:latest"))
    with capturedLogs():
        run.response.send(chunk({"content": "boom"}))
    (error,) = run.failures
    assert isinstance(error, InternalError) and error.status == 500
    assert run.request.written == [] and run.upstream_aborted


# -- what follows an ending inside the same upstream read -------------------------------------


def test_done_line_ends_stream_once_even_with_more_events_in_the_same_read() -> None:
    run = Relay()
    with capturedLogs() as logs:
        run.response.send(text(1) + DONE + chunk({}, "length") + DONE)
    assert failures_logged(logs) == [], "the events after [DONE] were still relayed"
    assert [line["done"] for line in run.lines()] == [False, True]
    assert run.lines()[-1]["done_reason"] == "stop"
    assert run.stream_lines.finish_reason is None, "an event after [DONE] was read"
    assert run.relay.ending is Ending.DONE and run.request.finished == 1


def test_an_error_event_ends_the_stream_even_with_done_in_the_same_read() -> None:
    run = Relay()
    with capturedLogs() as logs:
        run.response.send(text(1) + error_payload() + DONE)
    assert failures_logged(logs) == []
    assert run.relay.ending is Ending.ERROR and run.endings == [Ending.ERROR]


def test_a_malformed_event_ends_the_stream_even_with_done_in_the_same_read() -> None:
    run = Relay()
    with capturedLogs() as logs:
        run.response.send(text(1) + b"data: {oops\n\n" + DONE)
    assert failures_logged(logs) == []
    assert run.relay.ending is Ending.ERROR and run.causes() == ["malformed"]


def test_an_event_without_data_is_skipped_and_the_rest_of_the_read_relayed() -> None:
    run = Relay()
    # An event of unknown fields only (no data line) is dispatched, and means nothing.
    run.response.send(b"x-note: 1\n\n" + text(1) + b"x-note: 2\n\n" + DONE)
    assert [line["message"]["content"] for line in run.lines()] == [" w1", ""]
    assert run.endings == [Ending.DONE]


# -- tool calls: flushed when the finish reason first arrives, else at [DONE] --------------


def call_piece(name: str, arguments: str, **extra: Any) -> dict[str, Any]:
    return {"index": 0, "function": {"name": name, "arguments": arguments}, **extra}


def test_tool_calls_go_out_when_the_finish_reason_arrives_before_done() -> None:
    run = Relay()
    run.response.send(chunk({"tool_calls": [call_piece("lookup", '{"q": 1}', id="t")]}))
    assert run.lines() == []
    run.clock.advance(1.0)
    run.response.send(chunk({}, "tool_calls"))  # no [DONE] yet
    (call,) = run.lines()
    lookup = {"function": {"name": "lookup", "arguments": {"q": 1}}}
    assert call["message"]["tool_calls"] == [lookup]
    assert call["created_at"] == created_at(11.0) and call["done"] is False


def test_tool_call_pieces_after_the_finish_reason_go_out_with_done() -> None:
    run = Relay()
    run.response.send(chunk({"tool_calls": [call_piece("a", "{}", id="t")]}, "tool_calls"))
    assert len(run.lines()) == 1
    later = {"index": 1, "function": {"name": "b", "arguments": "{}"}}
    run.response.send(chunk({"tool_calls": [later]}))
    assert len(run.lines()) == 1, "a piece after the finish reason waits for [DONE]"
    run.response.send(DONE)
    first, second, done = run.lines()
    assert first["message"]["tool_calls"] == [{"function": {"name": "a", "arguments": {}}}]
    assert second["message"]["tool_calls"] == [{"function": {"name": "b", "arguments": {}}}]
    assert done["done"] is True and run.endings == [Ending.DONE]


def test_tool_calls_without_a_finish_reason_go_out_at_done_stamped_now() -> None:
    run = Relay()
    run.response.send(chunk({"tool_calls": [call_piece("get", '{"k": "v"}', id="t")]}))
    run.clock.advance(2.5)
    run.response.send(DONE)
    call, done = run.lines()
    assert call == {
        "model": "m:latest",
        "created_at": created_at(12.5),
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get", "arguments": {"k": "v"}}}],
        },
        "done": False,
    }
    assert done["done"] is True and done["created_at"] == created_at(12.5)


# -- defaults and timings ----------------------------------------------------------------


def test_default_idle_timeout_is_five_minutes() -> None:
    clock = Clock()
    request, response = PushRequest(), Response()
    relay = NdjsonRelay(
        request,  # type: ignore[arg-type]
        response,  # type: ignore[arg-type]
        StreamLines("chat", "m"),
        clock=clock,
        upstream_name="u",
        started=0.0,
    )
    failures: list[BaseException] = []
    relay.relay().addErrback(failures_of(failures))
    clock.advance(299.9)
    clock.advance(0)
    assert failures == []
    clock.advance(0.1)
    clock.advance(0)
    (error,) = failures
    assert isinstance(error, UpstreamError) and error.message == "u sent no data for 300 s"


def test_load_duration_without_timings_is_the_wait_for_the_upstreams_answer() -> None:
    run = Relay()  # arrived at 9 s, the upstream answered at 10 s
    run.response.send(text(1))
    run.clock.advance(4.0)
    run.response.send(DONE)
    done = run.lines()[-1]
    assert done["load_duration"] == 1_000_000_000
    assert done["total_duration"] == 5_000_000_000
