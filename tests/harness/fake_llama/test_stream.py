"""Stream faults, observed from outside over real sockets: events, cuts, pings."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest_twisted
from twisted.internet import reactor

from harness.fake_llama import expected_text
from harness.fake_llama.rawhttp import raw_request
from tests.harness.fake_llama._support import LONG, TOTAL_EVENTS, chat, contents, start
from tests.polling import until


@pytest_twisted.ensureDeferred
async def test_no_fault_baseline() -> None:
    server = await start()
    try:
        res = await chat(server)
        assert len(res.data) == TOTAL_EVENTS and res.data[-1] == "[DONE]"
        assert res.complete and res.ended == "client"
        assert contents(res) == expected_text(LONG)[0]
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_reset_after_sends_exactly_n_events_then_rst() -> None:
    server = await start()
    try:
        res = await chat(server, fault="reset_after=5")
        assert len(res.data) == 5 and "[DONE]" not in res.data
        assert res.ended == "reset" and not res.complete
        assert contents(res) == expected_text(LONG)[0][:4]  # role chunk is event 1
        assert server.cancelled == 0 and server.stats.faulted == 1
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_close_and_drop_after() -> None:
    server = await start()
    try:
        # close_after: the HTTP body ends properly, then FIN; no [DONE].
        res = await chat(server, fault="close_after=4", wait_close=True)
        assert len(res.data) == 4 and "[DONE]" not in res.data
        assert res.complete and res.ended == "fin"
        # drop_after: FIN in the middle of the chunked body.
        res = await chat(server, fault="drop_after=3", wait_close=True)
        assert len(res.data) == 3 and not res.complete and res.ended == "fin"
        # N = 0: right after the headers.
        res = await chat(server, fault="drop_after=0", wait_close=True)
        assert res.status == 200 and res.data == [] and res.ended == "fin"
        assert server.cancelled == 0
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_stall_after_keeps_socket_open_then_client_leaving_cancels() -> None:
    server = await start(metrics=True)
    try:
        res = await chat(server, fault="stall_after=2", idle_timeout=0.3)
        assert len(res.data) == 2 and res.ended == "idle" and not res.complete
        await until(lambda: server.cancelled == 1)
        assert any("stop: cancel task" in line for line in server.log_lines)
        assert server.slots.busy == 0
        metrics = await raw_request(reactor, "127.0.0.1", server.port, "GET", "/metrics")
        assert "fake_llama_cancelled_total 1" in metrics.body.decode()
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_error_after_both_dialects() -> None:
    server = await start()
    try:
        res = await chat(server, fault="error_after=3")
        assert len(res.data) == 4 and "[DONE]" not in res.data and res.complete
        err = json.loads(res.data[3])["error"]
        assert err["code"] == 500 and err["type"] == "server_error"

        res = await chat(server, fault="legacy_error_after=2")
        events = res.events
        assert [e.data is not None for e in events] == [True, True, False, True]
        legacy = json.loads(events[2].get("error") or "")
        assert legacy["error"]["code"] == 500
        assert res.data[-1] == "[DONE]" and len(res.data) == 3
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_malformed_and_duplicate() -> None:
    server = await start()
    try:
        res = await chat(server, fault="malformed_after=2")
        assert res.data[2] == "{not json"
        assert len(res.data) == TOTAL_EVENTS + 1 and res.data[-1] == "[DONE]"
        assert contents(res) == expected_text(LONG)[0]

        res = await chat(server, fault="duplicate_after=2")
        assert len(res.data) == TOTAL_EVENTS + 1 and res.data[1] == res.data[2]
        tokens = expected_text(LONG)[0]
        assert contents(res) == [tokens[0], *tokens]
    finally:
        await server.stop()


def _multibyte_body() -> dict[str, Any]:
    for i in range(200):
        body = {**LONG, "messages": [{"role": "user", "content": f"story {i}"}]}
        if any(not t.isascii() for t in expected_text(body)[0]):
            return body
    raise AssertionError("no multi-byte text found")  # pragma: no cover


@pytest_twisted.ensureDeferred
async def test_split_utf8_splits_inside_a_character() -> None:
    server = await start()
    try:
        body = _multibyte_body()
        res = await chat(server, body, fault="split_utf8")
        assert res.complete and res.data[-1] == "[DONE]"
        assert contents(res) == expected_text(body)[0]
        # Every event went out as two writes (two HTTP chunks).
        assert len(res.chunks) == 2 * len(res.data)
        cut = 0
        for chunk in res.chunks:
            try:
                chunk.decode("utf-8")
            except UnicodeDecodeError:
                cut += 1
        assert cut >= 2  # at least one character split into two chunks
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_crlf_line_endings() -> None:
    server = await start()
    try:
        res = await chat(server, fault="crlf")
        assert res.body.count(b"\r\n\r\n") == TOTAL_EVENTS
        assert b"\n\n" not in res.body.replace(b"\r\n", b"")
        assert contents(res) == expected_text(LONG)[0] and res.data[-1] == "[DONE]"
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_timing_ttft_token_delay_and_pings() -> None:
    server = await start()
    try:
        body = {**LONG, "max_tokens": 3}
        res = await chat(server, body, fault="ttft=300ms,token_delay=100ms,ping=40ms")
        assert res.t_headers is not None
        # Headers go out when the slot starts; the first event only after ttft.
        first = res.item_times[next(i for i, it in enumerate(res.items) if it in res.events)]
        assert first - res.t_headers >= 0.29
        assert res.item_times[-1] - first >= 0.19  # two token gaps
        assert len(res.comments) >= 4 and {c.text for c in res.comments} == {""}
        assert b":\n\n" in res.body
        assert contents(res) == expected_text(body)[0]
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_crash_after_in_process_kills_the_server() -> None:
    server = await start()
    port = server.port
    try:
        res = await chat(server, fault="crash_after=3")
        assert len(res.data) == 3 and res.ended == "reset"
        assert server.state == "crashed"
        again = await raw_request(reactor, "127.0.0.1", port, "GET", "/health")
        assert again.ended == "refused"
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_jitter_varies_token_gaps() -> None:
    server = await start(seed=1)
    try:
        res = await chat(server, fault="token_delay=40ms,jitter=25ms")
        times = res.item_times[1:-2]  # the 10 token events
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # A loaded reactor can merge two arrivals (a gap near 0), never deliver early:
        # the bound on the whole run holds where a bound on each gap would not.
        assert len(gaps) == 9 and times[-1] - res.t_connected >= 9 * (0.040 - 0.025)
        assert max(gaps) - min(gaps) > 0.01
        assert contents(res) == expected_text(LONG, seed=1)[0]
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_pings_continue_during_a_stall() -> None:
    server = await start(sse_ping_interval=0.05)
    try:
        res = await chat(server, fault="stall_after=1", timeout=0.5)
        assert res.ended == "timeout" and len(res.data) == 1
        assert len(res.comments) >= 5
        assert all(t > res.item_times[0] for t in res.item_times[1:])
    finally:
        await server.stop()
