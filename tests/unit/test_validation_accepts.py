"""Validation accepts what is valid: every valid body passes, not only hostile ones fail.

The rejection tests alone let a validator that refuses everything pass; these pin the
other half (issue 18's survivors: every completion or embeddings body a 400, a float
``temperature`` refused, ``max_tokens: 1`` refused, an assistant's ``content: null``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server_core.errors import BadRequest
from server_core.validation import (
    parse_json_body,
    validate_chat,
    validate_completion,
    validate_embeddings,
)

_names = st.text(alphabet="abcdefghij-_.:0123456789", min_size=1, max_size=12)
_texts = st.text(max_size=20).filter(lambda s: "\0" not in s)
_temperature = st.floats(min_value=0.0, max_value=2.0) | st.integers(min_value=0, max_value=2)

# Each optional field a valid value (or left out): a body is any subset of them.
_optional = st.fixed_dictionaries(
    {},
    optional={
        "model": _names,
        "max_tokens": st.integers(min_value=1, max_value=10**6),
        "max_completion_tokens": st.integers(min_value=1, max_value=10**6),
        "n": st.integers(min_value=1, max_value=8),
        "seed": st.integers(min_value=-(2**63), max_value=2**63 - 1),
        "temperature": _temperature,
        "top_p": st.floats(min_value=0.0, max_value=1.0),
        "presence_penalty": st.floats(min_value=-2.0, max_value=2.0),
        "frequency_penalty": st.floats(min_value=-2.0, max_value=2.0),
        "stop": st.none() | _texts | st.lists(_texts, max_size=4),
        "user": _texts,
    },
)


@st.composite
def _streamed(draw: st.DrawFn, extra: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid body: optional fields, ``extra``, and ``stream`` with its options."""
    body = {**draw(_optional), **draw(extra)}
    stream = draw(st.none() | st.booleans())
    if stream is not None:
        body["stream"] = stream
    if stream and draw(st.booleans()):
        body["stream_options"] = draw(
            st.fixed_dictionaries({}, optional={"include_usage": st.booleans()})
        )
    return body


_prompts = _texts | st.lists(_texts, min_size=1, max_size=3) | st.lists(st.integers(0, 50000))
_completion_bodies = _streamed(st.fixed_dictionaries({"prompt": _prompts}))
_embedding_bodies = st.fixed_dictionaries(
    {"input": _prompts}, optional={"model": _names, "encoding_format": st.just("float")}
) | st.fixed_dictionaries({"content": _texts}, optional={"model": _names})
_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant", "tool"])},
        optional={"content": st.none() | _texts | st.just([{"type": "text", "text": "hi"}])},
    ),
    min_size=1,
    max_size=4,
)
_chat_bodies = _streamed(st.fixed_dictionaries({"messages": _messages}))


def _accepted_after_the_wire(body: dict[str, Any], validate: Any) -> None:
    """``body`` as a client sends it: parsed from JSON, then validated without a 400."""
    parsed = parse_json_body(json.dumps(body).encode("utf-8"))
    validate(parsed)


@given(_completion_bodies)
def test_every_valid_completion_body_is_accepted(body: dict[str, Any]) -> None:
    _accepted_after_the_wire(body, validate_completion)


@given(_embedding_bodies)
def test_every_valid_embeddings_body_is_accepted(body: dict[str, Any]) -> None:
    _accepted_after_the_wire(body, validate_embeddings)


@given(_chat_bodies)
def test_every_valid_chat_body_is_accepted(body: dict[str, Any]) -> None:
    _accepted_after_the_wire(body, validate_chat)


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.5, 2.0, 0, 1, 2])
@pytest.mark.parametrize("validate", [validate_chat, validate_completion])
def test_a_float_or_integer_temperature_in_range_is_accepted(
    temperature: float, validate: Any
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "prompt": "hi"}
    validate({**body, "temperature": temperature})


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens", "n"])
def test_the_smallest_count_one_is_accepted_and_zero_is_not(field: str) -> None:
    body = {"model": "m", "prompt": "hi"}
    validate_completion({**body, field: 1})
    with pytest.raises(BadRequest) as caught:
        validate_completion({**body, field: 0})
    assert caught.value.param == field


@pytest.mark.parametrize(
    ("name", "lo", "hi"),
    [("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0), ("presence_penalty", -2.0, 2.0)],
)
def test_the_bounds_of_a_number_are_inclusive(name: str, lo: float, hi: float) -> None:
    for value in (lo, hi):
        validate_completion({"prompt": "p", name: value})
    for value in (lo - 0.01, hi + 0.01):
        with pytest.raises(BadRequest):
            validate_completion({"prompt": "p", name: value})


def test_an_assistant_message_with_null_content_and_tool_calls_is_accepted() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    validate_chat(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            ],
        }
    )


def test_an_embeddings_body_without_a_model_uses_the_default() -> None:
    validate_embeddings({"input": "hello"})
    validate_embeddings({"content": "hello"})


def test_stream_options_with_stream_true_are_accepted() -> None:
    validate_completion({"prompt": "p", "stream": True, "stream_options": {"include_usage": True}})
