"""The stream dialects: each API's complete ending, honest endings, and error event."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server_core.sse import Event, decode_all
from server_core.sse.dialects import (
    CHAT,
    DIALECTS,
    MESSAGES,
    NATIVE,
    RESPONSES,
    Frame,
    StreamDialect,
    anthropic_error,
    anthropic_error_type,
    dialect_for_path,
    dialect_named,
)


def frame(dialect: StreamDialect, data: object, event: str | None = None) -> Frame:
    text = data if isinstance(data, str) else json.dumps(data)
    return dialect.read(Event(data=text, event=event))[0]


def test_chat_completes_on_done_and_nothing_else() -> None:
    assert frame(CHAT, "[DONE]") is Frame.COMPLETE
    assert frame(CHAT, {"choices": [{"delta": {"content": "hi"}, "finish_reason": "stop"}]}) is (
        Frame.DATA
    )
    assert frame(CHAT, {"error": {"message": "boom"}}) is Frame.ERROR
    assert frame(CHAT, "{not json") is Frame.MALFORMED


def test_responses_endings() -> None:
    completed = {"type": "response.completed", "response": {"status": "completed"}}
    assert frame(RESPONSES, completed, "response.completed") is Frame.COMPLETE
    assert frame(RESPONSES, completed) is Frame.COMPLETE  # by type when there is no event:
    for final in ("response.failed", "response.incomplete"):
        assert frame(RESPONSES, {"type": final}, final) is Frame.FINAL
    delta = {"type": "response.output_text.delta", "delta": "hi"}
    assert frame(RESPONSES, delta, "response.output_text.delta") is Frame.DATA
    # llama-server's mid-stream error is a bare data: {"error": ...}; OpenAI's an error event.
    assert frame(RESPONSES, {"error": {"code": 500, "message": "x"}}) is Frame.ERROR
    assert frame(RESPONSES, {"type": "error", "message": "x"}, "error") is Frame.ERROR
    # [DONE] is not how a Responses stream completes.
    assert frame(RESPONSES, "[DONE]") is Frame.MALFORMED


def test_messages_endings() -> None:
    assert frame(MESSAGES, {"type": "message_stop"}, "message_stop") is Frame.COMPLETE
    assert frame(MESSAGES, {"type": "message_delta"}, "message_delta") is Frame.DATA
    assert frame(MESSAGES, {"type": "ping"}, "ping") is Frame.DATA
    # llama-server writes its error fields flat under event: error.
    assert frame(MESSAGES, {"code": 500, "message": "x", "type": "server_error"}, "error") is (
        Frame.ERROR
    )
    assert frame(MESSAGES, "not json", "error") is Frame.ERROR


def test_native_completes_on_stop_true_only() -> None:
    assert frame(NATIVE, {"content": "x", "stop": True}) is Frame.COMPLETE
    assert frame(NATIVE, {"content": "x", "stop": False}) is Frame.DATA
    assert frame(NATIVE, {"content": "x", "stop": "true"}) is Frame.DATA
    assert frame(NATIVE, {"error": {"message": "x"}}) is Frame.ERROR


@pytest.mark.parametrize("dialect", list(DIALECTS.values()), ids=lambda d: d.name)
def test_legacy_error_field_and_empty_events(dialect: StreamDialect) -> None:
    legacy = Event(data=None, extra=(("error", '{"message": "old"}'),))
    kind, payload = dialect.read(legacy)
    assert kind is Frame.ERROR and payload == {"message": "old"}
    assert dialect.read(Event(data=None, event="x"))[0] is Frame.SKIP


@pytest.mark.parametrize("dialect", list(DIALECTS.values()), ids=lambda d: d.name)
def test_error_frame_is_read_back_as_an_error_by_its_own_dialect(dialect: StreamDialect) -> None:
    raw = dialect.error_frame("upstream lost", "server_error", "upstream_stream_error")
    (event,) = decode_all(raw)
    assert isinstance(event, Event)
    kind, payload = dialect.read(event)
    assert kind is Frame.ERROR
    assert "upstream lost" in json.dumps(payload)


def test_error_frames_in_each_api_shape() -> None:
    (chat,) = decode_all(CHAT.error_frame("m", "server_error", "c"))
    assert isinstance(chat, Event) and chat.event is None
    assert json.loads(chat.data or "") == {
        "error": {"message": "m", "type": "server_error", "param": None, "code": "c"}
    }
    (resp,) = decode_all(RESPONSES.error_frame("m", "server_error", "c", sequence_number=7))
    assert isinstance(resp, Event) and resp.event == "error"
    assert json.loads(resp.data or "") == {
        "type": "error",
        "code": "c",
        "message": "m",
        "param": None,
        "sequence_number": 7,
    }
    (msg,) = decode_all(MESSAGES.error_frame("m", "server_error", "c"))
    assert isinstance(msg, Event) and msg.event == "error"
    assert json.loads(msg.data or "") == {
        "type": "error",
        "error": {"type": "api_error", "message": "m"},
    }


def test_anthropic_error_types_by_status_then_type() -> None:
    assert anthropic_error_type("server_error", 503) == "overloaded_error"
    assert anthropic_error_type("invalid_request_error", 400) == "invalid_request_error"
    assert anthropic_error_type("authentication_error", 401) == "authentication_error"
    assert anthropic_error_type("not_found_error", 404) == "not_found_error"
    assert anthropic_error_type("server_error", 502) == "api_error"
    assert anthropic_error_type("server_error") == "api_error"
    assert anthropic_error_type("invalid_request_error") == "invalid_request_error"
    assert anthropic_error("bad", "invalid_request_error", 400) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad"},
    }


def test_keepalive_forms() -> None:
    (ping,) = decode_all(MESSAGES.keepalive)
    assert isinstance(ping, Event) and ping.event == "ping"
    assert MESSAGES.read(ping)[0] is Frame.DATA  # Anthropic clients ignore pings
    for dialect in (CHAT, RESPONSES, NATIVE):
        assert dialect.keepalive.startswith(b":")


def test_dialect_lookup() -> None:
    assert dialect_for_path("/v1/chat/completions") is CHAT
    assert dialect_for_path("/v1/completions") is CHAT
    assert dialect_for_path("/completions") is NATIVE
    assert dialect_for_path("/completion?x=1") is NATIVE
    assert dialect_for_path("/v1/responses") is RESPONSES
    assert dialect_for_path("/v1/messages/") is MESSAGES
    assert dialect_for_path("/v1/embeddings") is None
    assert dialect_named("messages") is MESSAGES
    with pytest.raises(ValueError, match="unknown stream dialect"):
        dialect_named("ollama")


@given(st.text(max_size=40), st.sampled_from(list(DIALECTS.values())))
def test_any_text_message_survives_the_error_frame(message: str, dialect: StreamDialect) -> None:
    (event,) = decode_all(dialect.error_frame(message))
    kind, payload = dialect.read(event)  # type: ignore[arg-type]
    assert kind is Frame.ERROR
    error = payload["error"] if "error" in payload else payload
    assert error["message"] == message


# -- what the mutation run of dialects.py showed no test pinned ------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
        (500, "api_error"),
        (502, "api_error"),
        (414, "api_error"),
        (530, "api_error"),
    ],
)
def test_every_status_has_its_anthropic_error_type(status: int, expected: str) -> None:
    assert anthropic_error_type("server_error", status) == expected


@pytest.mark.parametrize(
    "kind", ["invalid_request_error", "authentication_error", "not_found_error"]
)
def test_anthropic_keeps_the_error_types_it_shares_with_openai(kind: str) -> None:
    assert anthropic_error_type(kind) == kind
    assert anthropic_error("m", kind)["error"]["type"] == kind
    (event,) = decode_all(MESSAGES.error_frame("m", kind))
    assert json.loads(event.data or "")["error"]["type"] == kind  # type: ignore[union-attr]


@pytest.mark.parametrize("dialect", list(DIALECTS.values()), ids=lambda d: d.name)
def test_error_frames_keep_text_as_text_and_carry_the_param(dialect: StreamDialect) -> None:
    raw = dialect.error_frame("modèle perdu ✂", "invalid_request_error", "c", "messages")
    assert "modèle perdu ✂".encode() in raw  # not \\u-escaped
    (event,) = decode_all(raw)
    payload = json.loads(event.data or "")  # type: ignore[union-attr]
    if dialect is not MESSAGES:  # Anthropic's errors have no param
        error = payload.get("error", payload)
        assert error["param"] == "messages"


def test_the_default_error_type_is_a_server_error() -> None:
    (chat,) = decode_all(CHAT.error_frame("m"))
    assert json.loads(chat.data or "")["error"]["type"] == "server_error"  # type: ignore[union-attr]
    (resp,) = decode_all(RESPONSES.error_frame("m"))
    assert json.loads(resp.data or "")["code"] == "server_error"  # type: ignore[union-attr]


@pytest.mark.parametrize("dialect", [RESPONSES, MESSAGES], ids=lambda d: d.name)
def test_named_streams_judge_by_the_payload_type_without_an_event_line(
    dialect: StreamDialect,
) -> None:
    last = "response.completed" if dialect is RESPONSES else "message_stop"
    assert frame(dialect, {"type": last}) is Frame.COMPLETE
    # A payload naming nothing, or naming with a non-string, is no error and no ending.
    assert frame(dialect, {"delta": "x"}) is Frame.DATA
    assert frame(dialect, {"type": 5, "delta": "x"}) is Frame.DATA
    # An "error" member is an error only in a payload that names no type.
    assert frame(dialect, {"type": "x.delta", "error": {"message": "m"}}) is Frame.DATA
    assert frame(dialect, {"error": {"message": "m"}}) is Frame.ERROR


def test_a_path_with_a_query_or_slashes_finds_its_dialect() -> None:
    assert dialect_for_path("/v1/responses?x=1?y=2") is RESPONSES
    assert dialect_for_path("/v1/chat/completions//") is CHAT
    assert dialect_for_path("") is None and dialect_for_path("/") is None
