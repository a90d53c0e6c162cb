"""``/v1/responses``: the request conversion, and the answers in llama-server's shapes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import pytest_twisted

from harness.fake_llama import expected_text
from harness.fake_llama.generate import RequestError
from harness.fake_llama.responses_api import responses_to_chat
from tests.harness.fake_llama._dialects import CHAT_BODY, MESSAGES_IN, SYSTEM, USER
from tests.harness.fake_llama._support import assert_error, req, start

BODY = {"instructions": SYSTEM, "input": USER, "max_output_tokens": 4}
TEXT = "".join(expected_text(CHAT_BODY)[0])
ID = re.compile(r"^(resp|msg)_[0-9A-Za-z]{32}$")


def test_conversion_of_string_input_and_instructions() -> None:
    chat = responses_to_chat({**BODY, "temperature": 0.5, "stream": True})
    assert chat == {
        "max_tokens": 4,
        "temperature": 0.5,
        "stream": True,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}],
    }


def test_conversion_of_item_lists() -> None:
    chat = responses_to_chat(
        {
            "input": [
                {"role": "developer", "content": "rules"},
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "a"}],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "b"}],
                },
                {"type": "function_call", "arguments": "{}", "call_id": "c1", "name": "f"},
                {"type": "function_call_output", "call_id": "c1", "output": "42"},
            ],
            "reasoning": {"effort": "low"},
        }
    )
    assert chat["reasoning_effort"] == "low" and "reasoning" not in chat
    assert chat["messages"] == [
        {"role": "developer", "content": [{"text": "rules", "type": "text"}]},
        {"role": "user", "content": [{"text": "a", "type": "text"}]},
        {
            "role": "assistant",
            "content": [{"text": "b", "type": "text"}],
            # merged into the assistant turn before it, as llama-server does
            "tool_calls": [
                {"function": {"arguments": "{}", "name": "f"}, "id": "c1", "type": "function"}
            ],
        },
        {"content": "42", "role": "tool", "tool_call_id": "c1"},
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "'input' is required"),
        ({"input": 3}, "'input' must be a string or array of objects"),
        ({"input": "x", "previous_response_id": "r"},
         "llama.cpp does not support 'previous_response_id'."),
        ({"input": [{"foo": 1}]}, "Cannot determine type of 'item'"),
        ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]},
         "'input_file' is not supported by llamacpp at this moment"),
        ({"input": [{"role": "user", "content": [{"type": "x"}]}]},
         "'type' must be one of 'input_text', 'input_image', or 'input_file'"),
    ],
)  # fmt: skip
def test_conversion_errors_are_llama_servers_400s(body: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestError) as info:
        responses_to_chat(body)
    assert (info.value.status, info.value.type, info.value.message) == (
        400,
        "invalid_request_error",
        message,
    )


@pytest_twisted.ensureDeferred
async def test_non_stream_shape_field_by_field() -> None:
    server = await start(alias="served")
    try:
        res = await req(server, "POST", "/v1/responses", {**BODY, "model": "ignored"})
        assert res.status == 200
        obj = res.json()
        assert list(obj) == [
            "completed_at", "created_at", "id", "model", "object", "output", "status", "usage"
        ]  # fmt: skip
        assert obj["completed_at"] == obj["created_at"] and isinstance(obj["created_at"], int)
        assert ID.match(obj["id"]) and obj["id"].startswith("resp_")
        assert (obj["model"], obj["object"], obj["status"]) == ("served", "response", "completed")
        [item] = obj["output"]
        assert list(item) == ["content", "id", "role", "status", "type"]
        assert ID.match(item["id"]) and item["id"].startswith("msg_")
        assert (item["role"], item["status"], item["type"]) == ("assistant", "completed", "message")
        assert item["content"] == [
            {"type": "output_text", "annotations": [], "logprobs": [], "text": TEXT}
        ]
        # system + user, as the chat request of the same messages counts them
        chat = await req(server, "POST", "/v1/chat/completions", CHAT_BODY)
        n_prompt = chat.json()["usage"]["prompt_tokens"]
        assert chat.json()["choices"][0]["message"]["content"] == TEXT
        assert obj["usage"] == {
            "input_tokens": n_prompt,
            "output_tokens": 4,
            "total_tokens": n_prompt + 4,
            "input_tokens_details": {"cached_tokens": 0},
        }
        assert server.requests == 2
    finally:
        await server.stop()


def _events(res: Any) -> list[tuple[str | None, Any]]:
    return [(e.event, json.loads(e.data or "")) for e in res.events]


@pytest_twisted.ensureDeferred
async def test_stream_shape_event_by_event() -> None:
    server = await start(alias="served")
    try:
        res = await req(server, "POST", "/responses", {**BODY, "stream": True})
        events = _events(res)
        assert all(name == data["type"] for name, data in events)  # named, typed, same name
        names = [name for name, _ in events]
        assert names == [
            "response.created", "response.in_progress", "response.output_item.added",
            "response.content_part.added", *["response.output_text.delta"] * 4,
            "response.output_text.done", "response.content_part.done",
            "response.output_item.done", "response.completed",
        ]  # fmt: skip
        data = [d for _, d in events]
        resp_id, msg_id = data[0]["response"]["id"], data[2]["item"]["id"]
        status = {"id": resp_id, "object": "response", "status": "in_progress"}
        assert data[0]["response"] == data[1]["response"] == status
        assert data[2]["item"] == {
            "content": [],
            "id": msg_id,
            "role": "assistant",
            "status": "in_progress",
            "type": "message",
        }
        assert data[3] == {
            "type": "response.content_part.added",
            "item_id": msg_id,
            "part": {"type": "output_text", "text": ""},
        }
        assert "".join(d["delta"] for d in data[4:8]) == TEXT
        assert {d["item_id"] for d in data[3:10]} == {msg_id}
        assert data[8]["text"] == TEXT
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": TEXT}
        assert data[9]["part"] == part
        item = {"type": "message", "status": "completed", "id": msg_id, "content": [part]}
        assert data[10]["item"] == {**item, "role": "assistant"}
        completed = data[11]
        assert list(completed) == ["type", "response", "timings"]
        assert completed["timings"]["predicted_n"] == 4
        response = completed["response"]
        assert list(response) == [
            "id", "object", "created_at", "status", "model", "output", "usage"
        ]  # fmt: skip
        assert (response["id"], response["status"], response["model"]) == (
            resp_id,
            "completed",
            "served",
        )
        assert response["output"] == [data[10]["item"]]
        assert response["usage"]["output_tokens"] == 4
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_input_tokens_route_counts_the_prompt_of_the_generation() -> None:
    server = await start()
    try:
        res = await req(server, "POST", "/v1/responses/input_tokens", BODY)
        gen = await req(server, "POST", "/v1/responses", BODY)
        n = gen.json()["usage"]["input_tokens"]
        assert res.json() == {"input_tokens": n, "object": "response.input_tokens"}
        chat = await req(server, "POST", "/v1/chat/completions", {"messages": MESSAGES_IN})
        assert (
            n == chat.json()["usage"]["prompt_tokens"] == 7
        )  # "system: be brief\nuser: count for me"
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_errors_before_the_first_byte() -> None:
    server = await start()
    try:
        res = await req(server, "POST", "/v1/responses", {"stream": True})
        assert_error(res, 400, "invalid_request_error", "'input' is required")
        image = {
            "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]
        }
        res = await req(server, "POST", "/v1/responses", image)
        assert_error(res, 500, "server_error")  # a runtime_error in llama-server: 500
        assert res.json()["error"]["message"].startswith("image input is not supported")
        res = await req(server, "POST", "/v1/responses", b"{nope")
        assert res.status == 500 and res.json()["error"]["type"] == "server_error"
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_expected_text_of_the_converted_body_is_what_the_server_sends() -> None:
    body = {"input": [{"role": "user", "content": "a"}], "seed": 11, "max_output_tokens": 50}
    tokens, _ = expected_text(responses_to_chat(body), seed=2)
    server = await start(seed=2)
    try:
        res = await req(server, "POST", "/v1/responses", body)
        assert res.json()["output"][0]["content"][0]["text"] == "".join(tokens)
        other = await req(server, "POST", "/v1/responses", {**body, "seed": 12})
        other_tokens, _ = expected_text(responses_to_chat({**body, "seed": 12}), seed=2)
        assert other_tokens != tokens  # the request seed passes through to the text
        assert other.json()["output"][0]["content"][0]["text"] == "".join(other_tokens)
    finally:
        await server.stop()
