"""Ollama requests as llama-server requests: valid bodies carried over, invalid ones refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server_core.errors import BadRequest
from server_core.ollama.keep_alive import FOREVER, capped, parse_keep_alive
from server_core.ollama.options import IGNORED, map_options
from server_core.ollama.request_bodies import (
    chat_request,
    embed_request,
    embeddings_request,
    generate_request,
)

USER = {"role": "user", "content": "hi"}


def test_chat_defaults_to_a_stream_with_usage() -> None:
    out = chat_request({"model": "m", "messages": [USER]})
    assert out.endpoint == "/chat/completions" and out.stream and out.model == "m"
    assert out.body == {
        "model": "m",
        "messages": [USER],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    whole = chat_request({"model": "m", "messages": [USER], "stream": False})
    assert not whole.stream and "stream_options" not in whole.body


def test_chat_options_format_tools_and_thinking_carry_over() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    out = chat_request(
        {
            "model": "m",
            "messages": [USER],
            "options": {"temperature": 0.2, "num_predict": 5, "stop": "x", "num_ctx": 9},
            "format": {"type": "object"},
            "tools": [tool],
            "think": False,
            "keep_alive": "10m",
        }
    ).body
    assert out["temperature"] == 0.2 and out["max_tokens"] == 5 and out["stop"] == ["x"]
    assert "num_ctx" not in out and "n_ctx" not in out  # a load-time option: ignored
    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": {"type": "object"}},
    }
    assert out["tools"] == [tool]
    assert out["chat_template_kwargs"] == {"enable_thinking": False}
    assert chat_request({"model": "m", "format": "json"}).body["response_format"] == {
        "type": "json_object"
    }


def test_chat_messages_images_tool_calls_and_tool_results() -> None:
    png = "iVBORw0KGgo="
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "what is this?", "images": [png]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "look", "arguments": {"q": 1}}}],
        },
        {"role": "tool", "content": "a cat", "tool_name": "look"},
    ]
    out = chat_request({"model": "m", "messages": messages})
    sent = out.body["messages"]
    assert out.images
    assert sent[1]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
    ]
    (call,) = sent[2]["tool_calls"]
    assert call["function"] == {"name": "look", "arguments": json.dumps({"q": 1})}
    assert call["type"] == "function" and call["id"]
    assert sent[3] == {"role": "tool", "content": "a cat", "name": "look"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [USER]}, "model"),
        ({"model": "", "messages": [USER]}, "model"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": "m", "messages": [{**USER, "images": "x"}]}, "messages[0].images"),
        ({"model": "m", "messages": [{**USER, "images": [3]}]}, "messages[0].images[0]"),
        ({"model": "m", "stream": "yes"}, "stream"),
        ({"model": "m", "format": "yaml"}, "format"),
        ({"model": "m", "think": "very"}, "think"),
        ({"model": "m", "tools": [{"type": "function"}]}, "tools[0]"),
        ({"model": "m", "options": [1]}, "options"),
        ({"model": "m", "options": {"temperature": "hot"}}, "options.temperature"),
        ({"model": "m", "options": {"top_k": 1.5}}, "options.top_k"),
        ({"model": "m", "options": {"stop": [1]}}, "options.stop"),
        ({"model": "m", "keep_alive": "soon"}, "keep_alive"),
    ],
)
def test_chat_refuses_what_it_cannot_carry(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        chat_request(body)
    assert caught.value.status == 400 and caught.value.param == param


def test_generate_is_a_chat_turn_with_its_system_prompt() -> None:
    out = generate_request({"model": "m", "prompt": "hello", "system": "sys", "stream": False})
    assert out.endpoint == "/chat/completions" and not out.stream
    assert out.body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hello"},
    ]


def test_raw_generate_is_a_text_completion() -> None:
    out = generate_request({"model": "m", "prompt": "[INST]x", "raw": True, "think": True})
    assert out.endpoint == "/completions" and out.body["prompt"] == "[INST]x"
    assert "messages" not in out.body and "chat_template_kwargs" not in out.body


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "prompt": 3}, "prompt"),
        ({"model": "m", "prompt": "a", "suffix": "b"}, "suffix"),
        ({"model": "m", "prompt": "a", "template": "{{ .Prompt }}"}, "template"),
        ({"model": "m", "prompt": "a", "raw": True, "images": ["iVBOR"]}, "images"),
        ({"model": "m", "prompt": "a", "system": 1}, "system"),
    ],
)
def test_generate_refuses_what_it_cannot_carry(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        generate_request(body)
    assert caught.value.param == param


def test_embed_takes_one_input_or_many() -> None:
    assert embed_request({"model": "e", "input": "a"}).body == {"model": "e", "input": ["a"]}
    many = embed_request({"model": "e", "input": ["a", "b"], "dimensions": 8, "truncate": True})
    assert many.endpoint == "/embeddings" and many.body["dimensions"] == 8
    assert embeddings_request({"model": "e", "prompt": "a"}).body["input"] == ["a"]
    for bad in ({"model": "e"}, {"model": "e", "input": []}, {"model": "e", "input": [1]}):
        with pytest.raises(BadRequest, match="input"):
            embed_request(bad)
    with pytest.raises(BadRequest, match="dimensions"):
        embed_request({"model": "e", "input": "a", "dimensions": 0})
    with pytest.raises(BadRequest, match="prompt"):
        embeddings_request({"model": "e"})


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (0, 0.0),
        (300, 300.0),
        (2.5, 2.5),
        (-1, FOREVER),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("300ms", 0.3),
        ("0", 0.0),
        ("-1m", FOREVER),
        ("120", 120.0),
        ("-1", FOREVER),
    ],
)
def test_keep_alive_takes_seconds_and_go_durations(value: Any, seconds: float | None) -> None:
    got = parse_keep_alive(value)
    if seconds is None:
        assert got is None
    else:
        assert got == pytest.approx(seconds)


@pytest.mark.parametrize("value", [True, "5 minutes", "m", "", "1x", [5], {"s": 1}, "nan"])
def test_keep_alive_refuses_what_is_no_duration(value: Any) -> None:
    with pytest.raises(BadRequest, match="keep_alive") as caught:
        parse_keep_alive(value)
    assert caught.value.param == "keep_alive" and "5m" in caught.value.message


def test_keep_alive_cap() -> None:
    assert capped(600, 300) == 300 and capped(60, 300) == 60
    assert capped(FOREVER, 300) == 300 and capped(FOREVER, None) == FOREVER
    assert capped(0, 300) == 0


def test_options_mapped_and_ignored() -> None:
    mapped = map_options(
        {"top_k": 40, "seed": 7.0, "repeat_penalty": 1.1, "num_keep": 4, "num_predict": -1}
    )
    assert mapped == {"top_k": 40, "seed": 7, "repeat_penalty": 1.1, "n_keep": 4}
    assert map_options({name: 1 for name in IGNORED}) == {}
    assert map_options({"unheard_of": 1, "temperature": None}) == {}
    assert map_options(None) == {}
