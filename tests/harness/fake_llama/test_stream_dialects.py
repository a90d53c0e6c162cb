"""Every stream fault in every dialect: chat, Responses, Anthropic Messages, native.

The fault machinery is one (``stream.py``); these check that each dialect's events are
counted, cut and ended the same way, and that ``server_core``'s dialect reading of
what arrives matches: a complete stream ends with ``Frame.COMPLETE``, an injected error
is one ``Frame.ERROR`` event in that dialect's shape.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from harness.fake_llama.rawhttp import RawResponse
from server_core.sse.dialects import Frame
from tests.harness.fake_llama._dialects import CASES, Case, event_json
from tests.harness.fake_llama._support import req, start

NAMES = [case.name for case in CASES]
pytestmark = pytest.mark.parametrize("case", CASES, ids=NAMES)


async def _stream(case: Case, fault: str | None = None, **kw: Any) -> RawResponse:
    """One stream of ``case`` from a fresh server, with ``fault`` as its X-Fault header."""
    server = await start()
    try:
        headers = {"X-Fault": fault} if fault is not None else None
        return await req(server, "POST", case.path, case.stream_body(), headers, **kw)
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_complete_stream(case: Case) -> None:
    res = await _stream(case)
    assert res.status == 200 and res.header("content-type") == "text/event-stream"
    frames = case.frames(res)
    assert len(frames) == case.events
    assert frames[-1] is Frame.COMPLETE and set(frames[:-1]) == {Frame.DATA}
    assert case.text(res) == case.expected
    assert res.complete and not res.comments


@pytest_twisted.ensureDeferred
async def test_non_stream_text_is_the_stream_text(case: Case) -> None:
    server = await start()
    try:
        res = await req(server, "POST", case.path, case.body)
        assert res.status == 200 and case.plain_of(res.json()) == case.expected
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_error_after_is_one_error_event_in_the_dialect(case: Case) -> None:
    res = await _stream(case, "error_after=3")
    frames = case.frames(res)
    assert frames == [Frame.DATA] * 3 + [Frame.ERROR] and res.complete
    last = res.events[-1]
    error = {
        "code": 500,
        "message": "fault injected by fake-llama-server (error_after=3)",
        "type": "server_error",
    }
    if case.name == "messages":  # format_anthropic_sse({"event": "error", "data": error})
        assert last.event == "error" and event_json(last) == error
    else:  # format_oai_sse({"error": error})
        assert last.event is None and event_json(last) == {"error": error}


@pytest_twisted.ensureDeferred
async def test_error_after_zero_is_an_error_right_after_the_headers(case: Case) -> None:
    res = await _stream(case, "error_after=0")
    assert res.status == 200 and case.frames(res) == [Frame.ERROR]


@pytest_twisted.ensureDeferred
async def test_legacy_error_after(case: Case) -> None:
    res = await _stream(case, "legacy_error_after=2")
    frames = case.frames(res)
    # The old dialect's [DONE] follows only where the OpenAI-era streams had one.
    tail = [Frame.COMPLETE] if case.name == "chat" else []
    if case.name == "native":
        tail = [Frame.MALFORMED]  # native has no [DONE] of its own: it is not JSON there
    assert frames == [Frame.DATA] * 2 + [Frame.ERROR] + tail


@pytest_twisted.ensureDeferred
async def test_reset_after(case: Case) -> None:
    res = await _stream(case, "reset_after=3")
    assert case.frames(res) == [Frame.DATA] * 3
    assert res.ended == "reset" and not res.complete


@pytest_twisted.ensureDeferred
async def test_close_after_ends_the_body_properly_without_the_ending(case: Case) -> None:
    res = await _stream(case, "close_after=4", wait_close=True)
    assert case.frames(res) == [Frame.DATA] * 4
    assert res.complete and res.ended == "fin"


@pytest_twisted.ensureDeferred
async def test_drop_after_cuts_inside_the_body(case: Case) -> None:
    res = await _stream(case, "drop_after=2", wait_close=True)
    assert case.frames(res) == [Frame.DATA] * 2
    assert not res.complete and res.ended == "fin"


@pytest_twisted.ensureDeferred
async def test_stall_after_with_pings(case: Case) -> None:
    res = await _stream(case, "stall_after=2,ping=30ms", timeout=0.4)
    assert case.frames(res) == [Frame.DATA] * 2 and res.ended == "timeout"
    # llama-server's ping is the same ":" comment in every dialect.
    assert len(res.comments) >= 3 and {c.text for c in res.comments} == {""}


@pytest_twisted.ensureDeferred
async def test_crash_after(case: Case) -> None:
    server = await start()
    try:
        res = await req(server, "POST", case.path, case.stream_body(), {"X-Fault": "crash_after=2"})
        assert case.frames(res) == [Frame.DATA] * 2 and res.ended == "reset"
        assert server.state == "crashed"
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_malformed_and_duplicate_add_one_event(case: Case) -> None:
    res = await _stream(case, "malformed_after=2")
    frames = case.frames(res)
    assert frames[2] is Frame.MALFORMED and len(frames) == case.events + 1
    assert frames[-1] is Frame.COMPLETE and case.text(res) == case.expected

    res = await _stream(case, "duplicate_after=1")
    assert len(res.events) == case.events + 1 and res.events[0] == res.events[1]
    assert case.frames(res)[-1] is Frame.COMPLETE


@pytest_twisted.ensureDeferred
async def test_split_utf8_and_crlf_keep_the_content(case: Case) -> None:
    res = await _stream(case, "split_utf8")
    assert len(res.chunks) == 2 * case.events and case.text(res) == case.expected
    assert case.frames(res)[-1] is Frame.COMPLETE

    res = await _stream(case, "crlf")
    assert res.body.count(b"\r\n\r\n") == case.events and b"\n\n" not in res.body
    assert case.text(res) == case.expected and case.frames(res)[-1] is Frame.COMPLETE


@pytest_twisted.ensureDeferred
async def test_ttft_and_token_delay(case: Case) -> None:
    res = await _stream(case, "ttft=200ms,token_delay=50ms")
    # Lower bounds from the connection (the client shares the reactor, so arrival
    # times can only be late, never early): ttft before the first event, three gaps
    # between the four tokens before the last.
    first, last = res.item_times[0] - res.t_connected, res.item_times[-1] - res.t_connected
    assert first >= 0.2 - 0.005 and last >= 0.2 + 3 * 0.05 - 0.005
    assert case.text(res) == case.expected


@pytest_twisted.ensureDeferred
async def test_status_fault_is_an_http_error_before_the_stream(case: Case) -> None:
    res = await _stream(case, "status=503")
    assert res.status == 503 and res.events == []
    assert res.json() == {
        "error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}
    }


_LIMIT_KEY = {
    "chat": "max_tokens",
    "responses": "max_output_tokens",
    "messages": "max_tokens",
    "native": "n_predict",
}
# With no token, only the final result's events are written (llama-server's
# opening events ride on the first token).
_ZERO_TOKEN_EVENTS = {"chat": 2, "responses": 1, "messages": 2, "native": 1}


@pytest_twisted.ensureDeferred
async def test_zero_tokens_writes_only_the_final_events(case: Case) -> None:
    server = await start()
    try:
        body = case.stream_body(**{_LIMIT_KEY[case.name]: 0})
        res = await req(server, "POST", case.path, body)
        frames = case.frames(res)
        assert len(frames) == _ZERO_TOKEN_EVENTS[case.name] and frames[-1] is Frame.COMPLETE
        assert case.text(res) == ""
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_non_stream_faults(case: Case) -> None:
    server = await start()
    try:
        res = await req(server, "POST", case.path, case.body, {"X-Fault": "error_after=2"})
        assert res.status == 500 and res.json()["error"]["type"] == "server_error"
        res = await req(server, "POST", case.path, case.body, {"X-Fault": "reset_after=1"})
        assert res.ended == "reset" and res.status is None
        res = await req(server, "POST", case.path, case.body, {"X-Fault": "reset_after=9"})
        assert res.status == 200  # beyond the last token: never triggers
    finally:
        await server.stop()
