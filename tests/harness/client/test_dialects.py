"""Each request is judged by the stream dialect of its path: its complete ending, its error
event, its honest non-success ending, and the violations after them."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted

from harness.client import (
    DONE,
    ERROR_EVENT,
    FINAL_EVENT,
    TRUNCATED,
    StreamResult,
    request_dialect,
    stream_request,
)
from server_core.sse import DONE_FRAME, encode_comment, encode_event
from server_core.sse.dialects import CHAT, MESSAGES, NATIVE, RESPONSES
from tests.harness.client.scripted import Action, ScriptServer, chat_stream, writes

# -- the frames of each dialect, as llama-server writes them ---------------------------


def typed(name: str, **fields: Any) -> bytes:
    """An ``event: <name>`` frame whose data is ``{"type": name, **fields}``."""
    return encode_event(json.dumps({"type": name, **fields}, ensure_ascii=False), event=name)


def responses_stream(words: list[str]) -> list[bytes]:
    response = {"id": "resp_1", "object": "response", "model": "rm", "status": "in_progress"}
    frames = [
        typed("response.created", response=response),
        typed("response.in_progress", response=response),
        typed("response.output_item.added", item={"type": "message", "id": "msg_1"}),
        typed("response.content_part.added", item_id="msg_1", part={"type": "output_text"}),
    ]
    frames += [typed("response.output_text.delta", item_id="msg_1", delta=w) for w in words]
    frames += [
        typed("response.output_text.done", item_id="msg_1", text="".join(words)),
        typed("response.content_part.done", item_id="msg_1"),
        typed("response.output_item.done", item={"type": "message"}),
    ]
    return frames


RESPONSES_COMPLETED = typed(
    "response.completed",
    response={"id": "resp_1", "model": "rm", "status": "completed", "usage": {"output_tokens": 2}},
)


def messages_stream(words: list[str]) -> list[bytes]:
    message = {"id": "msg_1", "type": "message", "model": "am", "role": "assistant"}
    frames = [
        typed("message_start", message=message),
        typed("content_block_start", index=0, content_block={"type": "text", "text": ""}),
    ]
    frames += [
        typed("content_block_delta", index=0, delta={"type": "text_delta", "text": w})
        for w in words
    ]
    frames += [
        typed("content_block_stop", index=0),
        typed("message_delta", delta={"stop_reason": "max_tokens"}, usage={"output_tokens": 2}),
    ]
    return frames


MESSAGE_STOP = typed("message_stop")


def native_stream(words: list[str]) -> list[bytes]:
    return [encode_event(json.dumps({"content": w, "stop": False})) for w in words]


NATIVE_STOP = encode_event(json.dumps({"content": "", "stop": True, "stop_type": "eos"}))
PLAIN_ERROR = encode_event(json.dumps({"error": {"code": 500, "message": "boom"}}))
RESPONSES_ERROR = encode_event(
    json.dumps({"type": "error", "code": "server_error", "message": "lost", "param": None}),
    event="error",
)
MESSAGES_ERROR = encode_event(
    json.dumps({"type": "error", "error": {"type": "api_error", "message": "lost"}}),
    event="error",
)


async def run_on(server: ScriptServer, path: str, actions: list[Action]) -> StreamResult:
    server.script(actions)
    return await stream_request(server.url(path), {"stream": True}, timeout=5.0)


# -- the dialect of a request ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "dialect"),
    [
        ("http://h/v1/chat/completions", CHAT),
        ("http://h/v1/completions", CHAT),
        ("http://h/v1/responses", RESPONSES),
        ("http://h/v1/messages?beta=true", MESSAGES),
        ("http://h/completion", NATIVE),
        ("http://h/anything/else", CHAT),  # the old, path-less default
    ],
)
def test_dialect_follows_the_path(url: str, dialect: object) -> None:
    assert request_dialect(url) is dialect


def test_explicit_dialect_wins_over_the_path() -> None:
    assert request_dialect("http://h/v1/chat/completions", "responses") is RESPONSES
    assert request_dialect("http://h/v1/chat/completions", MESSAGES) is MESSAGES
    with pytest.raises(ValueError, match="unknown stream dialect"):
        request_dialect("http://h/x", "klingon")


# -- complete endings and their text ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_responses_complete_ending_and_text(server: ScriptServer) -> None:
    frames = [*responses_stream(["Hel", "lo 日本"]), RESPONSES_COMPLETED]
    r = await run_on(server, "/v1/responses", [*writes(frames), ("finish",)])
    assert r.outcome == DONE and r.dialect == "responses"
    assert r.text == "Hello 日本" and r.model == "rm" and r.ids == {"resp_1"}
    assert r.usage == {"output_tokens": 2} and r.t_first_token is not None
    assert not (r.after_done or r.after_error or r.invalid_json)


@pytest_twisted.ensureDeferred
async def test_messages_complete_ending_and_text(server: ScriptServer) -> None:
    ping = typed("ping")  # Anthropic's keep-alive is an event, not a comment
    frames = [*messages_stream(["a", "b"]), ping, MESSAGE_STOP]
    r = await run_on(server, "/v1/messages", [*writes(frames), ("finish",)])
    assert r.outcome == DONE and r.dialect == "messages"
    assert r.text == "ab" and r.model == "am" and r.finish_reason == "length"
    assert r.ids == {"msg_1"} and not r.after_done


@pytest_twisted.ensureDeferred
async def test_native_complete_ending(server: ScriptServer) -> None:
    frames = [*native_stream(["x", "y"]), NATIVE_STOP]
    r = await run_on(server, "/completion", [*writes(frames), ("finish",)])
    assert r.outcome == DONE and r.text == "xy" and r.finish_reason == "stop"


# -- a stream without its own ending is not complete --------------------------------------


@pytest.mark.parametrize(
    ("path", "frames"),
    [
        ("/v1/responses", responses_stream(["a"])),
        ("/v1/responses", [*responses_stream(["a"]), DONE_FRAME]),  # [DONE] is chat's
        ("/v1/messages", messages_stream(["a"])),
        ("/completion", native_stream(["a"])),
        ("/v1/chat/completions", [*chat_stream(["a"]), MESSAGE_STOP]),  # not chat's ending
    ],
)
@pytest_twisted.ensureDeferred
async def test_stream_cut_before_its_own_ending_is_truncated(
    server: ScriptServer, path: str, frames: list[bytes]
) -> None:
    r = await run_on(server, path, [*writes(frames), ("finish",)])
    assert r.outcome == TRUNCATED, r.summary()


@pytest_twisted.ensureDeferred
async def test_chat_stream_on_the_responses_path_is_not_done(server: ScriptServer) -> None:
    # A relay answering /v1/responses in the chat dialect has not completed a Responses stream.
    frames = [*chat_stream(["a"]), DONE_FRAME]
    r = await run_on(server, "/v1/responses", [*writes(frames), ("finish",)])
    assert r.outcome == TRUNCATED and r.text == "a"


# -- error events, FINAL endings and the violations ---------------------------------------


@pytest.mark.parametrize(
    ("path", "frames", "error"),
    [
        ("/v1/responses", [*responses_stream(["a"]), RESPONSES_ERROR], "lost"),
        ("/v1/responses", [*responses_stream(["a"]), PLAIN_ERROR], "boom"),  # llama-server's
        ("/v1/messages", [*messages_stream(["a"]), MESSAGES_ERROR], "lost"),
        ("/completion", [*native_stream(["a"]), PLAIN_ERROR], "boom"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_error_event_of_each_dialect(
    server: ScriptServer, path: str, frames: list[bytes], error: str
) -> None:
    r = await run_on(server, path, [*writes(frames), ("finish",)])
    assert r.outcome == ERROR_EVENT, r.summary()
    assert r.error is not None and r.error["message"] == error
    assert not (r.after_error or r.done_after_error)


@pytest.mark.parametrize("name", ["response.failed", "response.incomplete"])
@pytest_twisted.ensureDeferred
async def test_responses_final_ending_is_honest_but_not_done(
    server: ScriptServer, name: str
) -> None:
    frames = [*responses_stream(["a"]), typed(name, response={"status": name.split(".")[1]})]
    r = await run_on(server, "/v1/responses", [*writes(frames), ("finish",)])
    assert r.outcome == FINAL_EVENT and r.final_event == name and not r.ok
    assert not r.after_done


@pytest.mark.parametrize(
    ("path", "frames", "flag"),
    [
        ("/v1/responses", [RESPONSES_COMPLETED, typed("response.output_text.delta")], "after_done"),
        ("/v1/responses", [RESPONSES_COMPLETED, RESPONSES_COMPLETED], "after_done"),
        ("/v1/messages", [MESSAGE_STOP, typed("ping")], "after_done"),
        ("/v1/messages", [MESSAGE_STOP, encode_comment("keep-alive")], "after_done"),
        ("/completion", [NATIVE_STOP, NATIVE_STOP], "after_done"),
        ("/v1/responses", [RESPONSES_ERROR, RESPONSES_COMPLETED], "done_after_error"),
        ("/v1/messages", [MESSAGES_ERROR, MESSAGE_STOP], "done_after_error"),
        ("/v1/messages", [MESSAGES_ERROR, typed("content_block_stop")], "after_error"),
        ("/completion", [PLAIN_ERROR, NATIVE_STOP], "done_after_error"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_violations_after_the_ending_or_an_error(
    server: ScriptServer, path: str, frames: list[bytes], flag: str
) -> None:
    r = await run_on(server, path, [*writes(frames), ("finish",)])
    flags = {f: getattr(r, f) for f in ("after_done", "done_after_error", "after_error")}
    assert flags == {f: f == flag for f in flags}, r.summary()


@pytest_twisted.ensureDeferred
async def test_malformed_data_in_a_responses_stream(server: ScriptServer) -> None:
    frames = [*responses_stream(["a"]), b"event: response.output_text.delta\ndata: {oops\n\n"]
    r = await run_on(
        server, "/v1/responses", [*writes([*frames, RESPONSES_COMPLETED]), ("finish",)]
    )
    assert r.outcome == DONE and r.invalid_json == 1


@pytest_twisted.ensureDeferred
async def test_explicit_dialect_reads_a_path_no_dialect_claims(server: ScriptServer) -> None:
    server.script([*writes([*messages_stream(["q"]), MESSAGE_STOP]), ("finish",)])
    url = server.url("/upstream/x/v1/messages")
    assert (await stream_request(url, {}, timeout=5.0)).outcome == TRUNCATED  # read as chat
    r = await stream_request(url, {}, timeout=5.0, dialect="messages")
    assert r.outcome == DONE and r.text == "q"


# -- whole (non-stream) bodies -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "text"),
    [
        (
            "/v1/responses",
            {
                "object": "response",
                "id": "resp_9",
                "model": "rm",
                "output": [{"type": "message", "content": [{"type": "output_text", "text": "hé"}]}],
            },
            "hé",
        ),
        (
            "/v1/messages",
            {
                "type": "message",
                "id": "msg_9",
                "model": "rm",
                "content": [{"type": "text", "text": "ok"}],
                "stop_reason": "end_turn",
            },
            "ok",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_whole_bodies_of_the_new_dialects(
    server: ScriptServer, path: str, body: dict[str, Any], text: str
) -> None:
    server.script(
        [("write", json.dumps(body).encode()), ("finish",)],
        headers={"Content-Type": "application/json"},
    )
    r = await stream_request(server.url(path), {}, timeout=5.0)
    assert r.outcome == DONE and r.text == text and r.model == "rm" and len(r.ids) == 1
