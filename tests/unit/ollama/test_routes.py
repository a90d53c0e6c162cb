"""The Ollama routes in-process (StubTreq, StubRouter): what is forwarded, what comes back,
and every error in Ollama's shape with a meaningful status."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server_core.testing import CannedResponse
from tests.unit.web.test_openai_routes import call, make

HI = [{"role": "user", "content": "hi"}]
COMPLETION = {
    "object": "chat.completion",
    "model": "upstream-name",
    "choices": [{"index": 0, "message": {"content": "hello"}, "finish_reason": "stop"}],
    "timings": {"prompt_n": 2, "prompt_ms": 1.0, "predicted_n": 1, "predicted_ms": 2.0},
}


def assert_ollama_error(payload: Any) -> str:
    assert isinstance(payload, dict) and set(payload) == {"error"}, payload
    assert isinstance(payload["error"], str) and payload["error"]
    return str(payload["error"])


def test_version_tags_and_show() -> None:
    stub, _ = make()
    assert call(stub, "GET", "/api/version") == (200, {"version": "0.12.3"})
    status, tags = call(stub, "GET", "/api/tags")
    assert status == 200 and [m["name"] for m in tags["models"]] == ["known"]
    status, shown = call(stub, "POST", "/api/show", {"model": "known:latest"})
    assert status == 200 and shown["capabilities"] == ["completion", "tools"]
    assert shown["model_info"] == {} and shown["details"]["format"] == ""
    assert call(stub, "GET", "/api/ps") == (200, {"models": []})


def test_whole_chat_is_forwarded_translated_and_answered_in_ollama_shape() -> None:
    stub, router = make()
    router.reply = CannedResponse(200, json.dumps(COMPLETION).encode())
    body = {"model": "known", "messages": HI, "stream": False, "options": {"seed": 1}}
    status, answer = call(stub, "POST", "/api/chat", body)
    assert status == 200
    ((endpoint, forwarded, _),) = router.forwarded
    assert endpoint == "/chat/completions"
    assert forwarded == {"model": "known", "messages": HI, "stream": False, "seed": 1}
    assert answer["model"] == "known" and answer["message"]["content"] == "hello"
    assert answer["done"] is True and answer["eval_duration"] == 2_000_000
    assert router.released == 1


def test_streamed_generate_is_ndjson_ending_with_done() -> None:
    stub, router = make()
    chunk = {"choices": [{"index": 0, "delta": {"content": "hey"}, "finish_reason": None}]}
    sse = b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n"
    router.reply = CannedResponse(200, sse, b"text/event-stream")
    status, raw = call(stub, "POST", "/api/generate", {"model": "known:latest", "prompt": "x"})
    lines = [json.loads(line) for line in raw.splitlines()]
    assert status == 200 and [line["response"] for line in lines] == ["hey", ""]
    assert lines[-1]["done"] is True and lines[0]["model"] == "known:latest"
    assert router.forwarded[0][1]["model"] == "known"  # ':latest' finds the bare name
    assert router.released == 1


def test_a_stream_cut_before_done_ends_with_one_error_line() -> None:
    stub, router = make()
    chunk = {"choices": [{"index": 0, "delta": {"content": "hey"}}]}
    sse = b"data: " + json.dumps(chunk).encode() + b"\n\n"  # then a clean close, no [DONE]
    router.reply = CannedResponse(200, sse, b"text/event-stream")
    status, raw = call(stub, "POST", "/api/chat", {"model": "known", "messages": HI})
    lines = [json.loads(line) for line in raw.splitlines()]
    assert status == 200 and lines[0]["done"] is False
    assert "before it was complete" in assert_ollama_error(lines[-1]) and len(lines) == 2


def test_embed_answers_one_vector_per_input() -> None:
    stub, router = make()
    vectors = {"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [2.0]}]}
    router.reply = CannedResponse(200, json.dumps(vectors).encode())
    status, answer = call(stub, "POST", "/api/embed", {"model": "known", "input": ["a", "b"]})
    assert status == 200 and answer["embeddings"] == [[1.0], [2.0]]
    assert router.forwarded[0][:2] == ("/embeddings", {"model": "known", "input": ["a", "b"]})


@pytest.mark.parametrize(
    ("upstream", "status"),
    [(400, 400), (404, 404), (500, 502), (503, 503)],
)
def test_upstream_errors_keep_a_meaningful_status(upstream: int, status: int) -> None:
    stub, router = make()
    error = {"error": {"code": upstream, "message": "no way", "type": "x"}}
    router.reply = CannedResponse(upstream, json.dumps(error).encode())
    got, payload = call(stub, "POST", "/api/chat", {"model": "known", "messages": HI})
    assert got == status and "no way" in assert_ollama_error(payload)
    assert router.released == 1


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "says"),
    [
        ("POST", "/api/chat", {"model": "nope", "messages": HI}, 404, "/api/tags"),
        ("POST", "/api/show", {"model": "nope"}, 404, "/api/tags"),
        ("POST", "/api/chat", {"messages": HI}, 400, "'model' is required"),
        ("POST", "/api/chat", b"{", 400, "not valid JSON"),
        ("POST", "/api/generate", {"model": "known", "prompt": "a", "suffix": "b"}, 400, "infill"),
        ("POST", "/api/embed", {"model": "known"}, 400, "input"),
        ("POST", "/api/pull", {"model": "x"}, 403, "configuration"),
        ("DELETE", "/api/delete", {"model": "x"}, 403, "does not create"),
        ("POST", "/api/blobs/sha256:00", b"", 403, "serves the models"),
    ],
)
def test_client_errors_are_ollama_shaped(
    method: str, path: str, body: Any, status: int, says: str
) -> None:
    stub, router = make()
    got, payload = call(stub, method, path, body)
    assert got == status and says in assert_ollama_error(payload)
    assert router.released == len(router.forwarded)


def test_api_keys_are_checked_and_refused_in_ollama_shape() -> None:
    stub, _ = make(api_keys=("k",))
    status, payload = call(stub, "GET", "/api/tags")
    assert status == 401 and assert_ollama_error(payload)
    ok = call(stub, "GET", "/api/tags", headers={"Authorization": "Bearer k"})
    assert ok[0] == 200


def test_an_internal_error_is_a_500_with_an_error_id_and_no_secret() -> None:
    stub, router = make()
    router.explode = True
    status, payload = call(stub, "POST", "/api/chat", {"model": "known", "messages": HI})
    message = assert_ollama_error(payload)
    assert status == 500 and "error id" in message and "/secret" not in message


def test_a_load_request_answers_without_asking_the_upstream() -> None:
    stub, router = make()
    status, answer = call(stub, "POST", "/api/chat", {"model": "known", "stream": False})
    assert status == 200 and answer["done_reason"] == "load" and router.forwarded == []
