"""ForwardedSse in every dialect: its own complete ending, its own error event on loss."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

from server_core.sse import Event
from server_core.sse.dialects import CHAT, MESSAGES, NATIVE, RESPONSES, StreamDialect
from server_core.sse.writer import Ending
from tests.unit.sse.test_forwarded import chunk, events, start


def frame(payload: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(payload).encode() + b"\n\n"


def responses_stream() -> list[bytes]:
    """llama-server's Responses stream, abridged: named events, no [DONE]."""
    return [
        frame(
            {"type": "response.created", "response": {"status": "in_progress"}}, "response.created"
        ),
        frame({"type": "response.output_text.delta", "delta": "Hi"}, "response.output_text.delta"),
        frame({"type": "response.output_text.delta", "delta": "!"}, "response.output_text.delta"),
        frame(
            {"type": "response.completed", "response": {"status": "completed"}},
            "response.completed",
        ),
    ]


def messages_stream() -> list[bytes]:
    """llama-server's Anthropic stream, abridged."""
    return [
        frame({"type": "message_start", "message": {"id": "m"}}, "message_start"),
        frame({"type": "content_block_start", "index": 0}, "content_block_start"),
        frame(
            {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}},
            "content_block_delta",
        ),
        frame({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        frame({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}, "message_delta"),
        frame({"type": "message_stop"}, "message_stop"),
    ]


def native_stream() -> list[bytes]:
    return [
        frame({"content": "Hi", "stop": False}),
        frame({"content": "!", "stop": False}),
        frame({"content": "", "stop": True, "timings": {}}),
    ]


STREAMS = {"responses": (RESPONSES, responses_stream), "messages": (MESSAGES, messages_stream),
           "native": (NATIVE, native_stream)}  # fmt: skip


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_complete_stream_ends_with_its_own_last_event(name: str) -> None:
    dialect, stream = STREAMS[name]
    request, response, relay, _, endings = start(dialect=dialect)
    frames = stream()
    for f in frames:
        response.send(f)
    # The stream ended on its last event, before the upstream body itself closed.
    assert endings == [Ending.DONE] and request.finished == 1
    assert b"".join(request.written) == b"".join(frames)
    assert not any(isinstance(e, Event) and e.is_done for e in events(request))
    response.end()
    assert not response.transport._producer.aborted  # the pooled connection is kept
    assert relay.events_relayed == len(frames)


def last_error(request: Any, dialect: StreamDialect) -> Any:
    out = [e for e in events(request) if isinstance(e, Event)]
    assert out, "nothing was written"
    last = out[-1]
    kind, payload = dialect.read(last)
    assert kind.name == "ERROR", f"last event is {last!r}"
    return last, payload


@pytest.mark.parametrize("name", sorted(STREAMS))
@pytest.mark.parametrize("loss", ["reset", "clean_close"])
def test_loss_before_the_ending_is_one_error_event_of_the_dialect(name: str, loss: str) -> None:
    dialect, stream = STREAMS[name]
    request, response, _, _, endings = start(dialect=dialect)
    frames = stream()
    for f in frames[:-1]:
        response.send(f)
    reason = ConnectionLost() if loss == "reset" else ResponseDone()
    response.end(Failure(reason))
    assert endings == [Ending.ERROR] and request.finished == 1
    written = b"".join(request.written)
    assert written.startswith(b"".join(frames[:-1]))
    last, payload = last_error(request, dialect)
    # Exactly one frame was added after the relayed ones: the error event.
    assert written == b"".join(frames[:-1]) + written[len(b"".join(frames[:-1])) :]
    assert len(events(request)) == len(frames)
    assert frames[-1] not in written
    if dialect is RESPONSES:
        assert last.event == "error" and payload["type"] == "error"
        assert payload["code"] == "upstream_stream_error"
        assert payload["sequence_number"] == len(frames) - 1
        assert "model 'u'" not in payload["message"] and "upstream 'u'" in payload["message"]
    elif dialect is MESSAGES:
        assert last.event == "error"
        assert payload == {
            "type": "error",
            "error": {"type": "api_error", "message": payload["error"]["message"]},
        }
        assert "upstream 'u'" in payload["error"]["message"]
    else:
        assert last.event is None and payload["error"]["code"] == "upstream_stream_error"


def test_anthropic_upstream_error_event_becomes_anthropic_shape() -> None:
    request, response, _, _, endings = start(dialect=MESSAGES)
    response.send(messages_stream()[0])
    # llama-server's own Anthropic error event: OpenAI-style fields under event: error.
    response.send(frame({"code": 500, "message": "decode failed", "type": "server_error"}, "error"))
    assert endings == [Ending.ERROR]
    _, payload = last_error(request, MESSAGES)
    assert payload["type"] == "error" and payload["error"]["type"] == "api_error"
    assert "decode failed" in payload["error"]["message"]
    assert response.transport._producer.aborted


def test_responses_upstream_error_data_becomes_a_responses_error_event() -> None:
    request, response, _, _, endings = start(dialect=RESPONSES)
    response.send(responses_stream()[0])
    response.send(frame({"error": {"code": 500, "message": "kv full", "type": "server_error"}}))
    assert endings == [Ending.ERROR]
    last, payload = last_error(request, RESPONSES)
    assert last.event == "error" and "kv full" in payload["message"]
    assert not any(b"response.completed" in w for w in request.written)


@pytest.mark.parametrize("final", ["response.failed", "response.incomplete"])
def test_responses_failed_or_incomplete_from_upstream_is_relayed_as_the_ending(final: str) -> None:
    request, response, _, _, endings = start(dialect=RESPONSES)
    response.send(responses_stream()[0])
    ending = frame({"type": final, "response": {"status": final.split(".")[1]}}, final)
    response.send(ending)
    assert endings == [Ending.DONE]
    assert b"".join(request.written).endswith(ending)
    # Nothing the upstream sends afterwards reaches the client.
    response.send(frame({"type": "response.completed"}, "response.completed"))
    assert not any(b"response.completed" in w for w in request.written)


def test_chat_done_is_not_a_responses_ending() -> None:
    request, response, _, _, endings = start(dialect=RESPONSES)
    response.send(responses_stream()[0] + b"data: [DONE]\n\n")
    assert endings == [Ending.ERROR]
    assert not any(isinstance(e, Event) and e.is_done for e in events(request))


def test_stop_true_is_not_a_chat_ending() -> None:
    _request, response, _, _, endings = start(dialect=CHAT)
    response.send(frame({"content": "x", "stop": True}))
    assert endings == []  # chat streams end with [DONE] only
    response.end(Failure(ResponseDone()))
    assert endings == [Ending.ERROR]


def test_messages_keepalive_is_a_ping_event() -> None:
    request, response, _, clock, endings = start(dialect=MESSAGES, keepalive=5.0)
    response.send(messages_stream()[0])
    clock.advance(5.0)
    pings = [e for e in events(request) if isinstance(e, Event) and e.event == "ping"]
    assert len(pings) == 1 and json.loads(pings[0].data or "") == {"type": "ping"}
    assert endings == []


def test_responses_keepalive_is_a_comment() -> None:
    request, _response, _, clock, _ = start(dialect=RESPONSES, keepalive=5.0)
    clock.advance(5.0)
    assert b"".join(request.written) == b": keep-alive\n\n"


def test_stall_in_messages_is_an_anthropic_error() -> None:
    request, response, _, clock, endings = start(dialect=MESSAGES, idle=30.0, keepalive=None)
    response.send(messages_stream()[0])
    clock.advance(31.0)
    assert endings == [Ending.ERROR]
    _, payload = last_error(request, MESSAGES)
    assert "no data for 30 s" in payload["error"]["message"]


@pytest.mark.parametrize(
    ("dialect", "payload", "event"),
    [
        (RESPONSES, {"type": "response.created", "response": {"model": "gemma", "id": "r"}},
         "response.created"),
        (MESSAGES, {"type": "message_start", "message": {"model": "gemma", "id": "m"}},
         "message_start"),
        (CHAT, {"model": "gemma", "choices": []}, None),
    ],
)  # fmt: skip
def test_the_model_is_the_name_the_client_asked_for_in_every_dialect(
    dialect: StreamDialect, payload: dict[str, Any], event: str | None
) -> None:
    request, response, _, _, _ = start(dialect=dialect, model_name="gpt-4o-mini")
    response.send(frame(payload, event))
    (out,) = [e for e in events(request) if isinstance(e, Event)]
    got = json.loads(out.data or "")
    holder = got.get("response") or got.get("message") or got
    assert holder["model"] == "gpt-4o-mini" and out.event == event
    assert json.dumps(got).count("gemma") == 0


@pytest.mark.parametrize(
    ("act", "cause"),
    [
        ("reset", "upstream_reset"),
        ("close", "upstream_closed"),
        ("stall", "stall"),
        ("malformed", "malformed"),
        ("oversized", "malformed"),
        ("error", "upstream_error"),
    ],
)
def test_the_relay_names_what_broke_the_stream_once_before_the_error_is_written(
    act: str, cause: str
) -> None:
    heard: list[tuple[str | None, int]] = []
    finished = []  # the request, once start() has made it

    def on_error(error: Any, why: str | None) -> None:
        heard.append((why, finished[0].finished))

    request, response, _, clock, endings = start(dialect=RESPONSES, idle=30.0, on_error=on_error)
    finished.append(request)
    response.send(responses_stream()[0])
    if act == "reset":
        response.end(Failure(ConnectionLost()))
    elif act == "close":
        response.end(Failure(ResponseDone()))
    elif act == "stall":
        clock.advance(31.0)
    elif act == "malformed":
        response.send(b"data: {nope\n\n")
    elif act == "oversized":
        response.send(b"data: " + b"x" * (1 << 21))  # past the decoder's line limit
    else:
        response.send(frame({"error": {"message": "kv full"}}))
    response.end(Failure(ConnectionLost()))  # anything later is not heard again
    assert heard == [(cause, 0)]
    assert endings == [Ending.ERROR]


def test_data_waiting_when_the_idle_timer_fires_is_read_before_the_verdict() -> None:
    # After the whole server was stopped (SIGSTOP), the reactor runs timers before reads:
    # the timer must look again once the waiting data has been read.
    _, response, _, clock, endings = start(idle=30.0, keepalive=None)
    response.send(chunk(0))
    # At t=30 the timer fires first, then the reactor reads what was waiting.
    clock.callLater(30.0, response.send, chunk(1))
    clock.advance(30.0)
    assert endings == []
    clock.advance(29.0)
    response.send(chunk(2) + b"data: [DONE]\n\n")
    assert endings == [Ending.DONE]
