"""The Responses and Anthropic Messages routes: accepted bodies, and errors in each API's shape."""

from __future__ import annotations

from typing import Any

import pytest

from server_core.testing import CannedResponse
from tests.unit.web.test_openai_routes import assert_openai_error, call, make

RESPONSES_OK = {"model": "known", "input": "hi"}
MESSAGES_OK = {
    "model": "known",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hi"}],
}


def assert_anthropic_error(payload: Any) -> dict[str, Any]:
    assert isinstance(payload, dict) and set(payload) == {"type", "error"}
    assert payload["type"] == "error"
    error = payload["error"]
    assert set(error) == {"type", "message"} and error["message"]
    return error


@pytest.mark.parametrize("path", ["/v1/responses", "/responses"])
@pytest.mark.parametrize(
    "body",
    [
        RESPONSES_OK,
        {**RESPONSES_OK, "input": [{"role": "user", "content": "hi"}]},
        {**RESPONSES_OK, "instructions": "be brief", "max_output_tokens": 1, "stream": True},
        {**RESPONSES_OK, "temperature": 0.7, "top_p": 0.5},
    ],
)
def test_valid_responses_bodies_are_forwarded_unchanged(path: str, body: dict[str, Any]) -> None:
    stub, router = make()
    status, _ = call(stub, "POST", path, body)
    assert status == 200
    ((endpoint, forwarded, _),) = router.forwarded
    assert endpoint == "/responses" and forwarded == body
    assert router.released == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "known"}, "input"),
        ({**RESPONSES_OK, "input": 3}, "input"),
        ({**RESPONSES_OK, "stream": "yes"}, "stream"),
        ({**RESPONSES_OK, "max_output_tokens": 0}, "max_output_tokens"),
        ({**RESPONSES_OK, "instructions": ["x"]}, "instructions"),
        ({**RESPONSES_OK, "temperature": 3}, "temperature"),
    ],
)
def test_responses_validation_is_openai_shaped(body: dict[str, Any], param: str) -> None:
    stub, router = make()
    status, payload = call(stub, "POST", "/v1/responses", body)
    assert status == 400 and assert_openai_error(payload)["param"] == param
    assert router.forwarded == []


@pytest.mark.parametrize(
    "body",
    [
        MESSAGES_OK,
        {**MESSAGES_OK, "system": "be brief", "stop_sequences": ["\n"], "stream": True},
        {**MESSAGES_OK, "system": [{"type": "text", "text": "be brief"}], "top_k": 0},
        {
            **MESSAGES_OK,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "x"}]},
                {"role": "assistant", "content": "y"},
            ],
        },
        {k: v for k, v in MESSAGES_OK.items() if k != "max_tokens"},  # llama-server's to judge
    ],
)
def test_valid_messages_bodies_are_forwarded_unchanged(body: dict[str, Any]) -> None:
    stub, router = make()
    router.reply = CannedResponse(200, b'{"type":"message","content":[]}')
    status, payload = call(stub, "POST", "/v1/messages", body)
    assert status == 200 and payload["type"] == "message"
    ((endpoint, forwarded, _),) = router.forwarded
    assert endpoint == "/messages" and forwarded == body


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": "known"}, "'messages'"),
        ({**MESSAGES_OK, "messages": []}, "'messages'"),
        ({**MESSAGES_OK, "messages": [{"role": "system", "content": "x"}]}, "messages[0]"),
        ({**MESSAGES_OK, "max_tokens": 0}, "max_tokens"),
        ({**MESSAGES_OK, "stop_sequences": "\n"}, "stop_sequences"),
        ({**MESSAGES_OK, "system": 3}, "system"),
        ({**MESSAGES_OK, "stream": 1}, "stream"),
    ],
)
def test_messages_errors_are_anthropic_shaped(body: dict[str, Any], fragment: str) -> None:
    stub, router = make()
    status, payload = call(stub, "POST", "/v1/messages", body)
    assert status == 400
    error = assert_anthropic_error(payload)
    assert error["type"] == "invalid_request_error" and fragment in error["message"]
    assert router.forwarded == []


def test_messages_auth_and_unknown_model_are_anthropic_shaped() -> None:
    stub, _ = make(api_keys=("k1",))
    status, payload = call(stub, "POST", "/v1/messages", MESSAGES_OK)
    assert status == 401 and assert_anthropic_error(payload)["type"] == "authentication_error"
    # Anthropic's SDK sends its key as x-api-key.
    status, _ = call(stub, "POST", "/v1/messages", MESSAGES_OK, headers={"x-api-key": "k1"})
    assert status == 200
    stub, _ = make()
    status, payload = call(stub, "POST", "/v1/messages", {**MESSAGES_OK, "model": "nope"})
    assert status == 404 and assert_anthropic_error(payload)["type"] == "not_found_error"


def test_messages_upstream_failure_is_anthropic_shaped_and_hides_nothing_else() -> None:
    stub, router = make()
    router.reply = CannedResponse(500, b"Traceback (most recent call last): /home/x/secret.py")
    status, payload = call(stub, "POST", "/v1/messages", MESSAGES_OK)
    assert status == 502
    error = assert_anthropic_error(payload)
    assert error["type"] == "api_error" and "secret.py" not in error["message"]
    assert router.released == 1


def test_count_tokens_errors_are_anthropic_shaped_and_chat_stays_openai() -> None:
    stub, _ = make()
    status, payload = call(stub, "POST", "/v1/messages/count_tokens", {"model": 5})
    assert status == 400 and assert_anthropic_error(payload)["type"] == "invalid_request_error"
    status, payload = call(stub, "POST", "/v1/chat/completions", {"model": 5})
    assert status == 400 and assert_openai_error(payload)


def test_v1_health() -> None:
    stub, _ = make()
    assert call(stub, "GET", "/v1/health") == (200, {"status": "ok"})


@pytest.mark.parametrize("messages", [None, [], "hello", [{"role": "system", "content": "x"}]])
def test_count_tokens_refuses_what_messages_refuses(messages: Any) -> None:
    stub, router = make()
    body: dict[str, Any] = {"model": "known"}
    if messages is not None:
        body["messages"] = messages
    status, payload = call(stub, "POST", "/v1/messages/count_tokens", body)
    assert status == 400
    assert assert_anthropic_error(payload)["type"] == "invalid_request_error"
    assert router.forwarded == []


def test_count_tokens_accepts_a_messages_body() -> None:
    stub, router = make()
    router.reply = CannedResponse(200, b'{"input_tokens": 9}')
    body = {k: v for k, v in MESSAGES_OK.items() if k != "max_tokens"}
    status, payload = call(stub, "POST", "/v1/messages/count_tokens", body)
    assert status == 200 and payload == {"input_tokens": 9}


def test_ollama_paths_answer_unknown_routes_and_methods_in_ollamas_shape() -> None:
    stub, _ = make()
    status, payload = call(stub, "GET", "/api/nonsense")
    assert status == 404 and set(payload) == {"error"} and "/api/nonsense" in payload["error"]
    status, payload = call(stub, "GET", "/api/chat")
    assert status == 405 and set(payload) == {"error"} and "GET" in payload["error"]
    # The OpenAI routes keep OpenAI's shape.
    status, payload = call(stub, "GET", "/v1/chat/completions")
    assert status == 405 and assert_openai_error(payload)["code"] == "method_not_allowed"
