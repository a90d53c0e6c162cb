"""NdjsonRelay driven by a Clock and a scripted upstream body: every ending honest, Ollama's way."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.http import PotentialDataLoss

from server_core.errors import ContextError, ServerCoreError
from server_core.ollama.relay import NdjsonRelay
from server_core.ollama.reply_bodies import StreamLines
from server_core.sse.writer import Ending
from tests.unit.sse.support import Request
from tests.unit.sse.test_forwarded import Response

TIMINGS = {"prompt_n": 7, "prompt_ms": 12.5, "predicted_n": 3, "predicted_ms": 30.0}


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    payload = {"id": "c1", "object": "chat.completion.chunk", "choices": [choice], **extra}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def text(i: int) -> bytes:
    return chunk({"content": f" w{i}"})


FINAL = (
    chunk({}, "stop")
    + b'data: {"choices":[],"usage":{"prompt_tokens":7}'
    + (b',"timings":' + json.dumps(TIMINGS).encode() + b"}\n\n")
)
DONE = b"data: [DONE]\n\n"


class Run:
    """One relay with its request, scripted response, clock and outcomes."""

    def __init__(self, kind: str = "chat", idle: float | None = 300.0, started: float = 0.0):
        self.clock = Clock()
        self.clock.advance(10.0)
        self.request = Request()
        self.response = Response()
        self.relay = NdjsonRelay(
            self.request,  # type: ignore[arg-type]
            self.response,  # type: ignore[arg-type]
            StreamLines(kind, "m:latest"),
            clock=self.clock,
            upstream_name="model 'm'",
            started=started or 9.0,
            idle_timeout=idle,
        )
        self.endings: list[Ending] = []
        self.failures: list[ServerCoreError] = []
        d = self.relay.relay()
        d.addCallbacks(self.endings.append, lambda f: self.failures.append(f.value))

    def lines(self) -> list[dict[str, Any]]:
        raw = b"".join(self.request.written)
        assert raw == b"" or raw.endswith(b"\n"), "every line ends with a newline"
        return [json.loads(line) for line in raw.splitlines()]

    @property
    def upstream_aborted(self) -> bool:
        return bool(self.response.transport._producer.aborted)

    def assert_error_line_last(self, *, upstream_open: bool = True) -> str:
        lines = self.lines()
        assert [line for line in lines if "error" in line] == lines[-1:]
        assert not any(line.get("done") is True for line in lines), "done:true after loss"
        assert self.request.finished == 1 and self.endings == [Ending.ERROR]
        if upstream_open:  # an upstream that is still there is cut at once
            assert self.upstream_aborted
        return str(lines[-1]["error"])


def test_complete_chat_stream_ends_with_done_and_timings_in_ns() -> None:
    run = Run()
    assert run.request.written == []  # no header before the first line
    run.response.send(chunk({"role": "assistant"}) + text(1) + text(2))
    run.clock.advance(2.0)
    run.response.send(FINAL + DONE)
    lines = run.lines()
    assert [line["message"]["content"] for line in lines[:-1]] == [" w1", " w2"]
    assert all(line["done"] is False and line["model"] == "m:latest" for line in lines[:-1])
    last = lines[-1]
    assert last["done"] is True and last["done_reason"] == "stop"
    assert last["prompt_eval_count"] == 7 and last["eval_count"] == 3
    assert last["prompt_eval_duration"] == 12_500_000 and last["eval_duration"] == 30_000_000
    assert last["total_duration"] == 3_000_000_000  # from the arrival (9 s) to the end (12 s)
    assert last["load_duration"] == 3_000_000_000 - 12_500_000 - 30_000_000
    assert run.request.responseHeaders.getRawHeaders(b"content-type") == [b"application/x-ndjson"]
    assert run.request.responseCode == 200
    assert run.endings == [Ending.DONE] and run.request.finished == 1


def test_generate_stream_lines_carry_response_text() -> None:
    run = Run("generate")
    run.response.send(text(1) + chunk({}, "length") + DONE)
    first, last = run.lines()
    assert first["response"] == " w1" and "message" not in first
    assert last["done"] is True and last["done_reason"] == "length" and last["response"] == ""


def test_text_completion_chunks_are_relayed_too() -> None:
    run = Run("generate")
    payload = {"choices": [{"index": 0, "text": "raw", "finish_reason": None}]}
    run.response.send(b"data: " + json.dumps(payload).encode() + b"\n\n" + DONE)
    assert [line["response"] for line in run.lines()] == ["raw", ""]


def test_tool_call_pieces_arrive_as_one_whole_call_before_done() -> None:
    run = Run()
    first = {"index": 0, "id": "t", "function": {"name": "get_", "arguments": '{"ci'}}
    second = {"index": 0, "function": {"name": "weather", "arguments": 'ty": "Oslo"}'}}
    run.response.send(chunk({"tool_calls": [first]}) + chunk({"tool_calls": [second]}))
    assert run.lines() == []
    run.response.send(chunk({}, "tool_calls") + DONE)
    call, last = run.lines()
    assert call["message"]["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    ]
    assert last["done"] is True and last["done_reason"] == "stop"


def test_reasoning_becomes_thinking() -> None:
    run = Run()
    run.response.send(chunk({"reasoning_content": "hmm"}) + DONE)
    assert run.lines()[0]["message"] == {"role": "assistant", "content": "", "thinking": "hmm"}


def test_clean_close_before_done_is_one_error_line() -> None:
    run = Run()
    run.response.send(text(1) + FINAL)  # the ending chunks, but never [DONE]
    run.response.end()
    assert "before it was complete" in run.assert_error_line_last(upstream_open=False)


def test_reset_mid_stream_is_one_error_line() -> None:
    for reason in (ConnectionLost(), PotentialDataLoss()):
        run = Run()
        run.response.send(text(1) + text(2)[:9])
        run.response.end(Failure(reason))
        message = run.assert_error_line_last(upstream_open=False)
        assert "model 'm'" in message
        assert [line.get("message", {}).get("content") for line in run.lines()[:-1]] == [" w1"]


def test_upstream_error_event_is_one_error_line_with_its_message() -> None:
    run = Run()
    error = {"error": {"code": 500, "message": "slot died", "type": "server_error"}}
    run.response.send(text(1) + b"data: " + json.dumps(error).encode() + b"\n\n" + DONE)
    assert "slot died" in run.assert_error_line_last()


def test_malformed_event_is_one_error_line() -> None:
    run = Run()
    run.response.send(text(1) + b"data: {not json\n\n")
    assert "malformed" in run.assert_error_line_last()


def test_failure_before_the_first_line_is_the_error_itself() -> None:
    run = Run()
    run.response.send(chunk({"role": "assistant"}))  # no text yet: no line
    run.response.end(Failure(ConnectionLost()))
    assert run.request.written == [] and not run.request.finished
    (error,) = run.failures
    assert error.status == 502 and "connection lost" in error.message
    run = Run()
    run.response.send(b"data: {broken\n\n")  # still open: cut at once
    assert run.upstream_aborted and run.request.written == []
    assert "malformed" in run.failures[0].message


def test_silence_past_the_idle_timeout_is_one_error_line() -> None:
    run = Run(idle=30.0)
    run.response.send(text(1))
    run.clock.advance(29.0)
    run.response.send(b": ping\n\n")  # pings are no progress once text flows
    run.clock.advance(2.0)
    assert "sent no data for 30 s" in run.assert_error_line_last()


def test_pings_after_an_event_that_wrote_no_line_are_no_progress_either() -> None:
    # Found by chaos (stall_after=1 with pings): the role-only first chunk writes no line,
    # and pings then kept the stream open past every timeout.
    run = Run(idle=30.0)
    run.response.send(chunk({"role": "assistant"}))
    assert run.lines() == []
    for _ in range(40):
        run.clock.advance(1.0)
        run.response.send(b": ping\n\n")
    assert run.failures and "sent no data for 30 s" in str(run.failures[0])
    assert run.upstream_aborted


def test_pings_before_any_event_are_a_prompt_being_processed() -> None:
    run = Run(idle=30.0)
    for _ in range(40):
        run.clock.advance(1.0)
        run.response.send(b": ping\n\n")
    assert run.failures == [] and run.endings == []
    run.response.send(text(1) + FINAL + DONE)
    assert run.lines()[-1]["done"] is True


def test_idle_clock_stops_while_the_client_holds_the_upstream_back() -> None:
    run = Run(idle=30.0)
    run.response.send(text(1))
    run.relay.pauseProducing()
    assert run.response.transport.paused
    run.clock.advance(100.0)
    run.relay.resumeProducing()
    assert not run.response.transport.paused
    run.response.send(DONE)
    assert run.endings == [Ending.DONE]


def test_client_disconnect_aborts_upstream_and_writes_nothing_more() -> None:
    run = Run()
    run.response.send(text(1))
    written = list(run.request.written)
    run.request.processingFailed(Failure(ConnectionLost()))
    assert run.upstream_aborted and run.endings == [Ending.CLIENT_GONE]
    run.response.send(text(2) + DONE)
    assert run.request.written == written


def test_client_gone_before_the_first_line_aborts_upstream() -> None:
    run = Run()
    run.request.processingFailed(Failure(ConnectionLost()))
    assert run.upstream_aborted and run.endings == [Ending.CLIENT_GONE]


def test_drain_ends_a_running_stream_with_one_error_line() -> None:
    run = Run()
    run.response.send(text(1))
    run.relay.end_with(ContextError("The server is shutting down; retry the request."))
    assert "shutting down" in run.assert_error_line_last()
    run.relay.end_with(ContextError("again"))  # once only
    assert len(run.lines()) == 2


def test_relay_is_the_clients_push_producer() -> None:
    run = Run()
    run.response.send(text(1))
    assert run.request.producer is run.relay
    run.response.send(DONE)
    assert run.request.producer is None


def test_body_kept_open_after_done_is_cut_after_a_grace() -> None:
    run = Run()
    run.response.send(text(1) + DONE)
    assert not run.upstream_aborted
    run.clock.advance(5.0)
    assert run.upstream_aborted and run.endings == [Ending.DONE]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.integers(min_value=1, max_value=40), max_size=12))
def test_any_chunking_of_the_upstream_gives_the_same_lines(cuts: list[int]) -> None:
    body = text(1) + text(2) + FINAL + DONE
    run = Run()
    at = 0
    for cut in cuts:
        run.response.send(body[at : at + cut])
        at += cut
    run.response.send(body[at:])
    lines = run.lines()
    assert [line["message"]["content"] for line in lines] == [" w1", " w2", ""]
    assert lines[-1]["done"] is True and run.endings == [Ending.DONE]
