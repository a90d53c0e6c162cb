"""The public request functions: what goes over the wire and what comes back."""

from __future__ import annotations

import json

import pytest
import pytest_twisted

from harness.client import (
    DONE,
    chat,
    completions,
    stream_request,
)
from harness.client._request import _endpoint, _request_headers, _split_kwargs
from server_core.sse import DONE_FRAME, encode_event
from tests.harness.client.scripted import (
    BODY,
    CID,
    MODEL,
    ScriptServer,
    chat_stream,
    chunk,
    run,
    writes,
)


@pytest_twisted.ensureDeferred
async def test_done_stream(server: ScriptServer) -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    usage_frame = encode_event(
        json.dumps({"id": CID, "model": MODEL, "choices": [], "usage": usage})
    )
    server.script([*writes([*chat_stream(["Hel", "lo"]), usage_frame, DONE_FRAME]), ("finish",)])
    r = await run(server, headers={"Authorization": "Bearer k"})
    assert r.outcome == DONE and r.ok
    assert r.status == 200
    assert r.headers["content-type"] == ["text/event-stream"]
    assert r.text == "Hello"
    assert r.finish_reason == "stop"
    assert r.model == MODEL
    assert r.ids == {CID}
    assert r.usage == usage
    assert r.n_events == len(r.events) == 6 and r.events[-1].is_done
    assert len(r.chunks) == 5
    assert r.error is None and r.body is None
    assert not r.after_done and not r.done_after_error
    assert r.end_reason == "complete"
    seen = server.seen[0]
    assert seen.method == "POST" and seen.path == "/v1/chat/completions"
    assert json.loads(seen.body) == BODY
    assert seen.headers["content-type"] == ["application/json"]
    assert seen.headers["authorization"] == ["Bearer k"]
    summary = r.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["outcome"] == "done" and summary["events"] == 6


@pytest_twisted.ensureDeferred
async def test_chat_and_completions_helpers(server: ScriptServer) -> None:
    text_chunk = encode_event(json.dumps({"id": "c1", "model": MODEL,
                                          "choices": [{"index": 0, "text": "ok"}]}))  # fmt: skip
    server.script([*writes([text_chunk, DONE_FRAME]), ("finish",)])
    base = server.url("")
    r = await completions(base + "/v1/", "m", "say ok", max_tokens=4, timeout=5.0)
    assert r.outcome == DONE and r.text == "ok"
    assert server.seen[-1].path == "/v1/completions"
    assert json.loads(server.seen[-1].body) == {
        "model": "m",
        "prompt": "say ok",
        "stream": True,
        "max_tokens": 4,
    }
    server.script([*writes([*chat_stream(["hi"]), DONE_FRAME]), ("finish",)])
    r = await chat(base, "m", [{"role": "user", "content": "x"}], idle_timeout=2.0)
    assert r.outcome == DONE and r.text == "hi"
    assert server.seen[-1].path == "/v1/chat/completions"
    assert "idle_timeout" not in json.loads(server.seen[-1].body)


@pytest_twisted.ensureDeferred
async def test_reasoning_content_and_get_without_body(server: ScriptServer) -> None:
    think = encode_event(
        json.dumps({"id": CID, "choices": [{"index": 0, "delta": {"reasoning_content": "hm"}}]})
    )
    server.script(
        [("write", think), ("wait", 0.02), *writes([chunk("ok"), DONE_FRAME]), ("finish",)]
    )
    r = await stream_request(server.url("/events"), None, method="GET", timeout=5.0)
    assert r.outcome == DONE
    assert r.reasoning == "hm" and r.text == "ok"
    assert r.t_first_token == r.event_times[0]
    seen = server.seen[0]
    assert seen.method == "GET" and seen.body == b"" and "content-type" not in seen.headers


# -- the helpers on their own --------------------------------------------------


@pytest.mark.parametrize("base", ["http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/"])
def test_endpoint_accepts_root_or_v1(base: str) -> None:
    assert _endpoint(base, "/v1/completions") == "http://h:1/v1/completions"


def test_client_keywords_are_the_keyword_only_parameters() -> None:
    client_names = {
        "method", "headers", "timeout", "idle_timeout", "reactor", "pool",
        "max_events", "disconnect_after", "body_limit", "clock", "on_event",
    }  # fmt: skip
    client_kw, body_kw = _split_kwargs({name: 1 for name in [*client_names, "max_tokens"]})
    assert set(client_kw) == client_names
    assert body_kw == {"max_tokens": 1}


def test_caller_headers_override_the_json_content_type() -> None:
    headers = _request_headers(True, {"content-type": "text/plain", "X-A": "1"})
    assert headers.getRawHeaders("Content-Type") == ["text/plain"]
    assert headers.getRawHeaders("x-a") == ["1"]
    assert not _request_headers(False, {}).hasHeader("Content-Type")
