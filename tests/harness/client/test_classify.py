"""The verdict: how each way a response can end is classified."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.client import (
    CONNECT_ERROR,
    DONE,
    ERROR_EVENT,
    TRUNCATED,
    stream_request,
)
from server_core.sse import encode_comment, encode_event
from tests.harness.client.scripted import (
    BODY,
    ERROR_OBJ,
    LEGACY_ERROR_FRAME,
    MODEL,
    Action,
    ScriptServer,
    chat_stream,
    chunk,
    completion_body,
    run,
    writes,
)


@pytest.mark.parametrize(("ending", "end_reason"), [("finish", "complete"), ("close", "lost")])
@pytest_twisted.ensureDeferred
async def test_clean_close_without_done_is_truncated(
    server: ScriptServer, ending: str, end_reason: str
) -> None:
    server.script([*writes(chat_stream(["a", "b"])), (ending,)])
    r = await run(server)
    assert r.outcome == TRUNCATED
    assert r.end_reason == end_reason
    assert r.text == "ab" and r.finish_reason == "stop"


@pytest_twisted.ensureDeferred
async def test_reset_is_truncated(server: ScriptServer) -> None:
    server.script([*writes(chat_stream(["a"])), ("wait", 0.02), ("reset",)])
    r = await run(server)
    assert r.outcome == TRUNCATED
    assert r.end_reason == "lost"
    assert r.exception is not None and "ResponseFailed" in r.exception
    assert r.n_events == 3


@pytest_twisted.ensureDeferred
async def test_partial_frame_then_close_is_truncated(server: ScriptServer) -> None:
    server.script([*writes([chunk("a"), b"data: [DO"]), ("close",)])
    r = await run(server)
    assert r.outcome == TRUNCATED and r.n_events == 1


@pytest_twisted.ensureDeferred
async def test_non_stream_json_done(server: ScriptServer) -> None:
    body = completion_body()
    server.script(
        [("write", body[:10]), ("wait", 0.01), ("write", body[10:]), ("finish",)],
        headers={"Content-Type": "application/json", "Content-Length": str(len(body))},
    )
    r = await run(server)
    assert r.outcome == DONE
    assert r.text == "héllo" and r.finish_reason == "length" and r.model == MODEL
    assert r.ids == {"chatcmpl-9"} and r.usage is not None
    assert r.json_body == json.loads(body) and r.body == body
    assert r.events == [] and r.end_reason == "complete"


@pytest_twisted.ensureDeferred
async def test_non_stream_truncated_body(server: ScriptServer) -> None:
    body = completion_body()
    server.script(
        [("write", body[:20]), ("close",)],
        headers={"Content-Type": "application/json", "Content-Length": str(len(body))},
    )
    r = await run(server)
    assert r.outcome == TRUNCATED and r.end_reason == "lost"
    assert r.body == body[:20]


@pytest_twisted.ensureDeferred
async def test_non_stream_invalid_json_is_truncated(server: ScriptServer) -> None:
    server.script([("write", b'{"choices": ['), ("finish",)], headers={"Content-Type": "x/y"})
    r = await run(server)
    assert r.outcome == TRUNCATED and r.end_reason == "complete"
    assert r.json_body is None


@pytest_twisted.ensureDeferred
async def test_connect_refused() -> None:
    srv = ScriptServer()
    url = srv.url()
    await srv.stop()
    r = await stream_request(url, BODY, timeout=5.0)
    assert r.outcome == CONNECT_ERROR
    assert r.status is None and r.end_reason == "connect_failed"
    assert r.exception is not None and "ConnectionRefused" in r.exception


TEXT_WORDS = ["Hé", "llo", " wö", "rld ", "🙂", "✓"]


EXPECTED = {
    "done": (DONE, False),
    "error": (ERROR_EVENT, False),
    "legacy": (ERROR_EVENT, True),
    "close": (TRUNCATED, False),
}


def scripted_payload(ending: str, crlf: bool) -> bytes:
    line_end = "\r\n" if crlf else "\n"
    frames = chat_stream(TEXT_WORDS, line_end=line_end)
    frames.insert(2, encode_comment("ping", line_end=line_end))
    if ending == "done":
        frames.append(encode_event("[DONE]", line_end=line_end))
    elif ending == "error":
        frames.append(encode_event(json.dumps({"error": ERROR_OBJ}), line_end=line_end))
    elif ending == "legacy":
        frames.append(LEGACY_ERROR_FRAME.replace(b"\n", line_end.encode()))
        frames.append(encode_event("[DONE]", line_end=line_end))
    return b"".join(frames)


def split(payload: bytes, cuts: list[int]) -> Iterator[bytes]:
    points = sorted({c % len(payload) for c in cuts} - {0})
    prev = 0
    for p in [*points, len(payload)]:
        yield payload[prev:p]
        prev = p


@settings(max_examples=20, deadline=None)
@given(
    ending=st.sampled_from(sorted(EXPECTED)),
    crlf=st.booleans(),
    cuts=st.lists(st.integers(min_value=1, max_value=100_000), max_size=16),
    pause=st.booleans(),
)
@pytest_twisted.ensureDeferred
async def test_chunking_does_not_change_the_verdict(
    ending: str, crlf: bool, cuts: list[int], pause: bool
) -> None:
    payload = scripted_payload(ending, crlf)
    actions: list[Action] = []
    for piece in split(payload, cuts):
        actions.append(("write", piece))
        if pause:
            actions.append(("wait", 0.001))
    # A server per example: hypothesis and function-scoped fixtures do not mix.
    srv = ScriptServer()
    try:
        srv.script([*actions, ("finish",)])
        r = await stream_request(srv.url(), BODY, timeout=5)
    finally:
        await srv.stop()
    outcome, done_after_error = EXPECTED[ending]
    assert r.outcome == outcome
    assert r.done_after_error == done_after_error
    assert r.text == "".join(TEXT_WORDS)
    assert r.comments == 1
    assert r.n_events == len(TEXT_WORDS) + 2 + (ending != "close") + (ending == "legacy")
    assert r.bytes_received == len(payload)
    assert not r.after_done and r.invalid_json == 0
