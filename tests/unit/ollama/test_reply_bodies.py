"""llama-server replies as Ollama objects: text, tool calls, timings in ns, embeddings."""

from __future__ import annotations

from typing import Any

from server_core.ollama.reply_bodies import (
    Durations,
    chat_reply,
    created_at,
    embed_reply,
    embeddings_reply,
    generate_reply,
    ollama_tool_calls,
)

TIMES = Durations(total=2.0, load=0.5)
TIMINGS = {"prompt_n": 11, "prompt_ms": 4.0, "predicted_n": 5, "predicted_ms": 50.25}


def completion(message: dict[str, Any], finish: str = "stop", **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "message": message, "finish_reason": finish}
    return {"object": "chat.completion", "choices": [choice], **extra}


def test_chat_reply_with_timings_in_nanoseconds() -> None:
    reply = completion({"role": "assistant", "content": "hello"}, timings=TIMINGS)
    out = chat_reply(reply, "m:latest", 0.0, TIMES)
    assert out == {
        "model": "m:latest",
        "created_at": "1970-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": "hello"},
        "done": True,
        "done_reason": "stop",
        "total_duration": 2_000_000_000,
        "load_duration": 1_945_750_000,  # the total outside the evaluation
        "prompt_eval_count": 11,
        "prompt_eval_duration": 4_000_000,
        "eval_count": 5,
        "eval_duration": 50_250_000,
    }


def test_usage_counts_when_there_are_no_timings() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2}
    out = chat_reply(completion({"content": "x"}, "length", usage=usage), "m", 0.0, TIMES)
    assert out["prompt_eval_count"] == 3 and out["eval_count"] == 2
    assert out["prompt_eval_duration"] == 0 and out["done_reason"] == "length"
    assert out["load_duration"] == 500_000_000  # no timings: the wait for the answer


def test_chat_reply_tool_calls_and_thinking() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    message = {"content": None, "tool_calls": [call], "reasoning_content": "so"}
    out = chat_reply(completion(message, "tool_calls"), "m", 0.0, TIMES)
    assert out["message"] == {
        "role": "assistant",
        "content": "",
        "thinking": "so",
        "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}],
    }
    assert out["done_reason"] == "stop"  # Ollama ends a tool call with an ordinary stop


def test_tool_call_arguments_that_are_no_object_are_kept() -> None:
    calls = [
        {"function": {"name": "f", "arguments": "not json"}},
        {"function": {"name": "g", "arguments": "[1]"}},
        {"function": {"arguments": "{}"}},
    ]
    assert ollama_tool_calls(calls) == [
        {"function": {"name": "f", "arguments": {"arguments": "not json"}}},
        {"function": {"name": "g", "arguments": {"arguments": [1]}}},
    ]


def test_generate_reply_from_a_chat_or_a_text_completion() -> None:
    chat = generate_reply(completion({"content": "hi"}), "m", 1.5, TIMES)
    assert chat["response"] == "hi" and chat["done"] is True
    assert chat["created_at"] == "1970-01-01T00:00:01.500000Z"
    text = {"choices": [{"index": 0, "text": "raw", "finish_reason": "length"}]}
    out = generate_reply(text, "m", 0.0, TIMES)
    assert out["response"] == "raw" and out["done_reason"] == "length"


def test_a_reply_without_choices_is_an_empty_answer() -> None:
    assert chat_reply({}, "m", 0.0, TIMES)["message"] == {"role": "assistant", "content": ""}


def test_embeddings_in_input_order() -> None:
    reply = {
        "data": [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}],
        "usage": {"prompt_tokens": 4},
    }
    out = embed_reply(reply, "e", TIMES)
    assert out["embeddings"] == [[1.0, 0.0], [0.0, 1.0]] and out["prompt_eval_count"] == 4
    assert out["total_duration"] == 2_000_000_000 and out["model"] == "e"
    assert embeddings_reply(reply) == {"embedding": [1.0, 0.0]}
    assert embeddings_reply({}) == {"embedding": []}


def test_created_at_is_rfc3339_utc() -> None:
    assert created_at(86400.25) == "1970-01-02T00:00:00.250000Z"


def test_prompt_eval_count_includes_what_the_kv_cache_reused() -> None:
    # A repeated conversation: llama-server evaluated 1 token, its cache held 41.
    timings = {"prompt_n": 1, "cache_n": 41, "predicted_n": 5, "prompt_ms": 1.0,
               "predicted_ms": 9.0}  # fmt: skip
    out = chat_reply(completion({"content": "x"}, timings=timings), "m", 0.0, TIMES)
    assert out["prompt_eval_count"] == 42 and out["eval_count"] == 5
    # usage.prompt_tokens, when there is one, is already the whole prompt.
    usage = {"prompt_tokens": 42, "completion_tokens": 5}
    reply = completion({"content": "x"}, timings=timings, usage=usage)
    assert chat_reply(reply, "m", 0.0, TIMES)["prompt_eval_count"] == 42
