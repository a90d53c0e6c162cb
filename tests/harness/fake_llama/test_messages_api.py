"""``/v1/messages`` (Anthropic): the request conversion, the answers, ``count_tokens``."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted

from harness.fake_llama import expected_text
from harness.fake_llama.generate import RequestError
from harness.fake_llama.messages_api import anthropic_to_chat
from tests.harness.fake_llama._dialects import CHAT_BODY, SYSTEM, USER
from tests.harness.fake_llama._support import assert_error, req, start

BODY = {"system": SYSTEM, "messages": [{"role": "user", "content": USER}], "max_tokens": 4}
TEXT = "".join(expected_text(CHAT_BODY)[0])


def test_conversion_keeps_only_what_llama_server_passes_on() -> None:
    chat = anthropic_to_chat(
        {
            "system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant"},  # no content: dropped
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm"}]},
            ],
            "stop_sequences": ["x"],
            "temperature": 0.1,
            "seed": 5,  # not passed on
            "stream": True,
        }
    )
    assert chat == {
        "messages": [
            {"role": "system", "content": "ab"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": "", "reasoning_content": "hmm"},
        ],
        "stop": ["x"],
        "max_tokens": 4096,  # Anthropic requires it; llama-server defaults it
        "temperature": 0.1,
        "stream": True,
    }


def test_conversion_of_tool_blocks_and_images() -> None:
    chat = anthropic_to_chat(
        {
            "messages": [
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1",
                     "content": [{"type": "text", "text": "4"}, {"type": "text", "text": "2"}]},
                    {"type": "image", "source": {"type": "url", "url": "http://i"}}]},
            ]
        }
    )  # fmt: skip
    call = {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    assert chat["messages"] == [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://i"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "42"},
    ]


def test_missing_messages_is_llama_servers_500() -> None:
    with pytest.raises(RequestError) as info:
        anthropic_to_chat({"system": "s"})
    assert (info.value.status, info.value.type) == (500, "server_error")
    assert info.value.message == "'messages' is required"


@pytest_twisted.ensureDeferred
async def test_non_stream_shape_field_by_field() -> None:
    server = await start(alias="served")
    try:
        res = await req(server, "POST", "/v1/messages", {**BODY, "model": "claude-x"})
        assert res.status == 200
        obj = res.json()
        assert list(obj) == [
            "id", "type", "role", "content", "model", "stop_reason", "stop_sequence", "usage"
        ]  # fmt: skip
        assert obj["id"].startswith("chatcmpl-")  # llama-server's completion id
        assert (obj["type"], obj["role"], obj["model"]) == ("message", "assistant", "served")
        assert obj["content"] == [{"type": "text", "text": TEXT}]
        assert (obj["stop_reason"], obj["stop_sequence"]) == ("max_tokens", None)
        chat = await req(server, "POST", "/v1/chat/completions", CHAT_BODY)
        n_prompt = chat.json()["usage"]["prompt_tokens"]
        assert obj["usage"] == {
            "cache_read_input_tokens": 0,
            "input_tokens": n_prompt,
            "output_tokens": 4,
        }
        # No limit reached: the turn ends at EOS, and a stop sequence names itself.
        free = await req(server, "POST", "/v1/messages", {**BODY, "max_tokens": 100})
        assert free.json()["stop_reason"] == "end_turn"
        assert free.json()["stop_sequence"] is None
        word = TEXT.split()[1]
        stopped = await req(server, "POST", "/v1/messages", {**BODY, "stop_sequences": [word]})
        assert (stopped.json()["stop_reason"], stopped.json()["stop_sequence"]) == (
            "end_turn",
            word,
        )
        assert stopped.json()["content"][0]["text"] == TEXT[: TEXT.index(word)]
    finally:
        await server.stop()


def _events(res: Any) -> list[tuple[str | None, Any]]:
    return [(e.event, json.loads(e.data or "")) for e in res.events]


@pytest_twisted.ensureDeferred
async def test_stream_shape_event_by_event() -> None:
    server = await start(alias="served")
    try:
        res = await req(server, "POST", "/v1/messages", {**BODY, "stream": True})
        assert res.status == 200 and res.header("content-type") == "text/event-stream"
        events = _events(res)
        assert all(name == data["type"] for name, data in events)
        data = [d for _, d in events]
        assert [d["type"] for d in data] == [
            "message_start", "content_block_start", *["content_block_delta"] * 4,
            "content_block_stop", "message_delta", "message_stop",
        ]  # fmt: skip
        n_prompt = data[0]["message"]["usage"]["input_tokens"]
        assert data[0]["message"] == {
            "id": data[0]["message"]["id"],
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "served",
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"cache_read_input_tokens": 0, "input_tokens": n_prompt, "output_tokens": 0},
        }
        assert data[1] == {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        assert {d["index"] for d in data[2:7]} == {0}
        assert {d["delta"]["type"] for d in data[2:6]} == {"text_delta"}
        assert "".join(d["delta"]["text"] for d in data[2:6]) == TEXT
        assert data[7] == {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            "usage": {"output_tokens": 4},
        }
        assert data[8] == {"type": "message_stop"}
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_count_tokens_is_the_generations_prompt_size() -> None:
    server = await start()
    try:
        counted = await req(server, "POST", "/v1/messages/count_tokens", BODY)
        gen = await req(server, "POST", "/v1/messages", BODY)
        assert counted.json() == {"input_tokens": gen.json()["usage"]["input_tokens"]}
        no_system = {"messages": BODY["messages"]}  # max_tokens is not needed to count
        counted = await req(server, "POST", "/v1/messages/count_tokens", no_system)
        assert counted.json() == {"input_tokens": 4}  # "user: count for me"
        assert server.requests == 1  # counting is not a generation
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_errors_are_llama_servers_openai_shaped_ones() -> None:
    server = await start()
    try:
        res = await req(server, "POST", "/v1/messages", {"stream": True, "max_tokens": 3})
        assert_error(res, 500, "server_error", "'messages' is required")
        bad = {"messages": [{"role": "user", "content": 3}]}
        res = await req(server, "POST", "/v1/messages", bad)
        assert_error(
            res, 400, "invalid_request_error", "Expected 'content' to be a string or an array"
        )
        res = await req(server, "POST", "/v1/messages", BODY, {"X-Fault": "status=503"})
        assert_error(res, 503, "unavailable_error", "Loading model")
        res = await req(server, "POST", "/messages", BODY)  # llama-server has no such route
        assert_error(res, 404, "not_found_error")
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_expected_text_of_the_converted_body_is_what_the_server_sends() -> None:
    body = {**BODY, "temperature": 0.3, "max_tokens": 50}
    tokens, finish = expected_text(anthropic_to_chat(body), seed=2)
    server = await start(seed=2)
    try:
        res = await req(server, "POST", "/v1/messages", body)
        assert res.json()["content"][0]["text"] == "".join(tokens)
        assert (finish, res.json()["stop_reason"]) == ("stop", "end_turn")
    finally:
        await server.stop()
