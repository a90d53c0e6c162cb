"""Routes in-process (treq's StubTreq): validation, auth, error shapes, never a 5xx."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet.task import Clock

from server_core.testing import CannedResponse, StubRouter
from server_core.web import OpenAIRoutes


def make(api_keys: tuple[str, ...] = ()) -> tuple[StubTreq, StubRouter]:
    clock = Clock()
    router = StubRouter(clock)
    routes = OpenAIRoutes(router, clock=clock, api_keys=api_keys)
    return StubTreq(routes.resource()), router


def call(stub: StubTreq, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    d = stub.request(method, "http://server" + path, data=data, **kw)
    stub.flush()
    response = d.result if hasattr(d, "result") else None
    assert response is not None, "no response"
    content_d = response.content()
    stub.flush()
    raw = content_d.result
    try:
        return response.code, json.loads(raw)
    except ValueError:
        return response.code, raw


def assert_openai_error(payload: Any) -> dict[str, Any]:
    assert isinstance(payload, dict) and set(payload) == {"error"}
    error = payload["error"]
    assert {"message", "type", "code", "param"} <= set(error)
    assert isinstance(error["message"], str) and error["message"]
    return error


CHAT = "/v1/chat/completions"
OK_BODY = {"model": "known", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        # A missing model is not a validation error any more (the default model may serve
        # it); without a default it is still a 400 naming 'model', from the router.
        ({"messages": OK_BODY["messages"]}, "model"),
        ({"model": 3, "messages": []}, "model"),
        ({"model": "known"}, "messages"),
        ({"model": "known", "messages": "hi"}, "messages"),
        ({"model": "known", "messages": []}, "messages"),
        ({"model": "known", "messages": [3]}, "messages[0]"),
        ({"model": "known", "messages": [{"content": "x"}]}, "messages[0].role"),
        ({**OK_BODY, "stream": "yes"}, "stream"),
        ({**OK_BODY, "max_tokens": 0}, "max_tokens"),
        ({**OK_BODY, "max_tokens": 1.5}, "max_tokens"),
        ({**OK_BODY, "temperature": 9}, "temperature"),
        ({**OK_BODY, "stop": [1]}, "stop"),
        ({**OK_BODY, "stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
def test_chat_validation_names_the_field(body: dict[str, Any], param: str) -> None:
    stub, router = make()
    status, payload = call(stub, "POST", CHAT, body)
    assert status == 400
    error = assert_openai_error(payload)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert router.forwarded == []


@pytest.mark.parametrize("raw", [b"", b"{", b"[1]", b"\xff\xfe", b'{"model": "known",}'])
def test_invalid_json_is_400(raw: bytes) -> None:
    stub, _ = make()
    status, payload = call(stub, "POST", CHAT, raw)
    assert status == 400
    assert assert_openai_error(payload)["type"] == "invalid_request_error"


def test_unknown_model_is_404_model_not_found() -> None:
    stub, _ = make()
    status, payload = call(stub, "POST", CHAT, {**OK_BODY, "model": "nope"})
    assert status == 404
    error = assert_openai_error(payload)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "nope" in error["message"]


def test_unknown_route_and_method_are_json() -> None:
    stub, _ = make()
    status, payload = call(stub, "GET", "/v2/whatever")
    assert status == 404 and assert_openai_error(payload)["type"] == "not_found_error"
    status, payload = call(stub, "GET", CHAT)
    assert status == 405 and assert_openai_error(payload)["code"] == "method_not_allowed"


def test_completions_and_embeddings_validation() -> None:
    stub, _ = make()
    status, payload = call(stub, "POST", "/v1/completions", {"model": "known"})
    assert status == 400 and assert_openai_error(payload)["param"] == "prompt"
    # The form of 'input' is llama-server's to judge (issue 11); a missing one is ours.
    status, payload = call(stub, "POST", "/v1/embeddings", {"model": "known"})
    assert status == 400 and assert_openai_error(payload)["param"] == "input"


def test_forward_and_release() -> None:
    stub, router = make()
    status, payload = call(stub, "POST", CHAT, OK_BODY, headers={"X-Fault": "ttft=1ms"})
    assert status == 200 and payload["object"] == "chat.completion"
    ((endpoint, body, headers),) = router.forwarded
    assert endpoint == "/chat/completions" and body == OK_BODY
    assert headers.getRawHeaders(b"x-fault") == [b"ttft=1ms"]
    assert router.released == 1


def test_upstream_error_is_normalized_and_lease_released() -> None:
    stub, router = make()
    router.reply = CannedResponse(
        500, b'{"error":{"code":500,"message":"llama died","type":"server_error"}}'
    )
    status, payload = call(stub, "POST", CHAT, OK_BODY)
    assert status == 502
    error = assert_openai_error(payload)
    assert "llama died" in error["message"] and error["type"] == "server_error"
    assert router.released == 1


def test_upstream_context_error_keeps_400_and_counts() -> None:
    stub, router = make()
    router.reply = CannedResponse(
        400,
        b'{"error":{"code":400,"message":"too long","type":"exceed_context_size_error",'
        b'"n_prompt_tokens":5000,"n_ctx":4096}}',
    )
    status, payload = call(stub, "POST", CHAT, OK_BODY)
    assert status == 400
    error = assert_openai_error(payload)
    assert error["type"] == "exceed_context_size_error"
    assert error["n_prompt_tokens"] == 5000 and error["n_ctx"] == 4096


def test_upstream_plain_text_and_html_errors() -> None:
    stub, router = make()
    # A plain-text 4xx body is summarised like a 5xx one: the status, never the text.
    router.reply = CannedResponse(429, b"slow down, key sk-abc of org-x", b"text/plain")
    status, payload = call(stub, "POST", CHAT, OK_BODY)
    message = assert_openai_error(payload)["message"]
    assert status == 429 and "HTTP 429 Too Many Requests" in message and "sk-abc" not in message
    # A plain-text 5xx body may be a traceback with paths and secrets: never relayed.
    router.reply = CannedResponse(
        503, b'Traceback: File "/srv/app.py", password="hunter2"', b"text/plain"
    )
    status, payload = call(stub, "POST", CHAT, OK_BODY)
    message = assert_openai_error(payload)["message"]
    assert status == 503 and "HTTP 503" in message
    assert "hunter2" not in message and "/srv" not in message
    router.reply = CannedResponse(502, b"<html><body>Bad Gateway</body></html>", b"text/html")
    status, payload = call(stub, "POST", CHAT, OK_BODY)
    assert status == 502 and "<html" not in assert_openai_error(payload)["message"]


def test_upstream_auth_failure_is_not_blamed_on_the_client() -> None:
    stub, router = make()
    router.reply = CannedResponse(
        401, b'{"error":{"message":"Incorrect API key provided: sk-pr****1234","type":"x"}}'
    )
    status, payload = call(stub, "POST", CHAT, OK_BODY)
    error = assert_openai_error(payload)
    assert status == 502 and error["code"] == "upstream_auth_failed"
    assert "sk-pr" not in error["message"]


def test_truncated_json_reply_is_502_not_200() -> None:
    stub, router = make()
    router.reply = CannedResponse(200, b'{"object":"chat.comp')
    status, payload = call(stub, "POST", CHAT, OK_BODY)
    assert status == 502 and assert_openai_error(payload)["type"] == "upstream_error"


def test_internal_error_has_id_and_no_details() -> None:
    stub, router = make()
    router.explode = True
    status, payload = call(stub, "POST", CHAT, OK_BODY)
    assert status == 500
    error = assert_openai_error(payload)
    assert "error id" in error["message"]
    assert "secret" not in json.dumps(payload) and "Traceback" not in json.dumps(payload)


def test_api_keys() -> None:
    stub, _ = make(api_keys=("k1", "k2"))
    status, payload = call(stub, "GET", "/v1/models")
    assert status == 401 and assert_openai_error(payload)["type"] == "authentication_error"
    status, payload = call(stub, "POST", CHAT, OK_BODY, headers={"Authorization": "Bearer bad"})
    assert status == 401
    status, _ = call(stub, "POST", CHAT, OK_BODY, headers={"Authorization": "Bearer k2"})
    assert status == 200
    status, _ = call(stub, "GET", "/v1/models", headers={"x-api-key": "k1"})
    assert status == 200
    status, payload = call(stub, "GET", "/health")
    assert status == 200 and payload == {"status": "ok"}


def test_models_routes() -> None:
    stub, _ = make()
    status, payload = call(stub, "GET", "/v1/models")
    assert status == 200 and payload["object"] == "list" and payload["data"][0]["id"] == "known"
    status, payload = call(stub, "GET", "/v1/models/known")
    assert status == 200 and payload["id"] == "known"
    status, payload = call(stub, "GET", "/v1/models/other")
    assert status == 404 and assert_openai_error(payload)["code"] == "model_not_found"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3)
    ),
    max_leaves=8,
)
_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["known", "other", ""]) | _json,
        "messages": st.lists(
            st.fixed_dictionaries({}, optional={"role": _json, "content": _json}) | _json,
            max_size=3,
        )
        | _json,
        "prompt": _json,
        "input": _json,
        "stream": _json,
        "max_tokens": _json,
        "temperature": _json,
        "stop": _json,
        "stream_options": _json,
        "n": _json,
    },
)


@settings(max_examples=150)
@given(
    body=_bodies | _json,
    path=st.sampled_from([CHAT, "/v1/completions", "/v1/embeddings"]),
)
def test_generated_bodies_never_give_a_5xx(body: Any, path: str) -> None:
    stub, _ = make()
    status, payload = call(stub, "POST", path, json.dumps(body).encode())
    assert status < 500, payload
    if status != 200:
        assert_openai_error(payload)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "known", "messages": [{"role": "user", "content": "x"}], "temperature": '
        + b"1" * 400
        + b"}",
        b'{"model": "known", "messages": [{"role": "user", "content": "x"}], "max_tokens": -'
        + b"9" * 400
        + b"}",
        b'{"model": "known", "messages": [{"role": "user", "content": "x"}], "x": NaN}',
        b'{"model": "known", "messages": [{"role": "user", "content": "x"}], "x": -Infinity}',
        b'{"model": "known", "messages": [{"role": "user", "content": "\\ud800"}]}',
        b'{"model": "known", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
)
def test_hostile_json_is_a_400_never_a_500(raw: bytes) -> None:
    stub, router = make()
    status, payload = call(stub, "POST", CHAT, raw)
    assert status == 400, payload
    assert_openai_error(payload)
    assert router.forwarded == []


def test_paired_surrogate_escape_is_fine() -> None:
    stub, router = make()
    raw = b'{"model": "known", "messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}'
    status, _ = call(stub, "POST", CHAT, raw)
    assert status == 200
    assert router.forwarded[0][1]["messages"][0]["content"] == "\U0001f600"


def test_a_whole_json_reply_over_16_mib_is_a_502_not_held() -> None:
    stub, router = make()
    router.reply = CannedResponse(200, b'{"x":"' + b"a" * (16 * 1024 * 1024) + b'"}')
    status, payload = call(stub, "POST", CHAT, OK_BODY)
    assert status == 502
    assert "incomplete response" in assert_openai_error(payload)["message"]
