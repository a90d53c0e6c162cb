"""The verdict: how each way a response can end is classified."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import error as ierror
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss

from harness.client import (
    CONNECT_ERROR,
    DISCONNECTED,
    DONE,
    ERROR_EVENT,
    HTTP_ERROR,
    TIMEOUT,
    TRUNCATED,
    StreamResult,
    stream_request,
)
from harness.client._body import BodyState
from harness.client._classify import body_end_reason, classify, classify_failure, describe
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
    # A reset discards what the client's kernel holds unread: the pause lets a loaded
    # machine's client read the events first (0.02 s was lost once in CI).
    server.script([*writes(chat_stream(["a"])), ("wait", 0.3), ("reset",)])
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


# -- the rules on their own ----------------------------------------------------


def never() -> float:
    raise AssertionError("the clock is not needed here")


def json_state(body: bytes, end_reason: str = "complete", limit: int = 64) -> BodyState:
    state = BodyState(StreamResult(end_reason=end_reason), None, limit)
    state.begin(200)
    state.arrived(body, 1.0)
    return state


@pytest.mark.parametrize(
    ("end_reason", "outcome"),
    [
        ("timeout", TIMEOUT),
        ("idle_timeout", TIMEOUT),
        ("client_abort", DISCONNECTED),
        ("lost", TRUNCATED),
        ("complete", DONE),
    ],
)
def test_json_body_verdict_follows_the_transport_first(end_reason: str, outcome: str) -> None:
    assert classify(json_state(b"{}", end_reason), never) == outcome


def test_json_body_over_the_limit_is_truncated() -> None:
    state = json_state(b"[" + b"1," * 40 + b"1]", limit=8)
    assert classify(state, never) == TRUNCATED
    assert state.result.exception == "body larger than body_limit (8 bytes)"


def test_json_body_text_is_stamped_at_the_first_byte() -> None:
    state = json_state(json.dumps({"choices": [{"message": {"content": "x"}}]}).encode())
    assert classify(state, never) == DONE
    assert state.result.t_first_token == 1.0


def test_sse_abort_without_done_names_why_we_left() -> None:
    state = BodyState(StreamResult(headers={"content-type": ["text/event-stream"]}), None, 8)
    state.begin(200)
    state.result.end_reason = "idle_timeout"
    assert classify(state, never) == TIMEOUT


def test_http_error_status_wins_over_a_cut_body() -> None:
    state = BodyState(StreamResult(end_reason="lost"), None, 64)
    state.begin(502)
    state.arrived(b'{"error": "bad gate', 1.0)
    assert classify(state, never) == HTTP_ERROR
    assert state.result.error is None and state.result.body == b'{"error": "bad gate'


@pytest.mark.parametrize(
    ("exc", "outcome", "end_reason"),
    [
        (ierror.ConnectionRefusedError(), CONNECT_ERROR, "connect_failed"),
        (ierror.DNSLookupError(), CONNECT_ERROR, "connect_failed"),
        (ResponseNeverReceived([Failure(ierror.ConnectionDone())]), TRUNCATED, "no_response"),
        (ValueError("odd"), TRUNCATED, "no_response"),
    ],
)
def test_failure_before_headers(exc: Exception, outcome: str, end_reason: str) -> None:
    r = StreamResult()
    classify_failure(r, Failure(exc))
    assert (r.outcome, r.end_reason) == (outcome, end_reason)
    assert r.exception is not None and r.exception.startswith(type(exc).__name__)


def test_failure_after_our_timeout_is_a_timeout() -> None:
    r = StreamResult(end_reason="timeout")
    classify_failure(r, Failure(ierror.ConnectingCancelledError(None)))
    assert r.outcome == TIMEOUT and r.end_reason == "timeout" and r.exception is None


def test_describe_names_the_inner_reasons() -> None:
    failure = Failure(ResponseFailed([Failure(ierror.ConnectionLost()), ValueError()]))
    assert describe(failure) == "ResponseFailed: ConnectionLost, ValueError"
    assert describe(Failure(KeyError())) == "KeyError"


def test_body_end_reason() -> None:
    assert body_end_reason(Failure(ResponseDone())) == "complete"
    assert body_end_reason(Failure(PotentialDataLoss())) == "closed"
    assert body_end_reason(Failure(ierror.ConnectionLost())) == "lost"
