"""Every request fault of the fake llama-server, observed from outside over real sockets."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from harness.fake_llama import FakeConfig, FakeServer, expected_text, start_fake_server
from harness.fake_llama.rawhttp import RawResponse, raw_request
from tests.polling import until

# ignore_eos + max_tokens: exactly 10 tokens, so a stream has 1 role + 10 tokens
# + 1 finish + [DONE] = 13 data events.
LONG = {
    "messages": [{"role": "user", "content": "count for me"}],
    "stream": True,
    "ignore_eos": True,
    "max_tokens": 10,
}
TOTAL_EVENTS = 13


async def start(faults: str = "", **kw: Any) -> FakeServer:
    return await start_fake_server(FakeConfig(faults=faults, **kw), reactor)


async def chat(
    server: FakeServer, body: Any = None, fault: str | None = None, **kw: Any
) -> RawResponse:
    headers = {"X-Fault": fault} if fault is not None else None
    return await raw_request(
        reactor,
        "127.0.0.1",
        server.port,
        "POST",
        "/v1/chat/completions",
        body or LONG,
        headers,
        **kw,
    )


def contents(res: RawResponse) -> list[str]:
    out = []
    for obj in res.json_events():
        for choice in obj.get("choices", []):
            c = choice.get("delta", {}).get("content")
            if c:
                out.append(c)
    return out


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
async def test_status_and_hang_before_headers() -> None:
    server = await start()
    try:
        res = await chat(server, fault="status=503")
        assert res.status == 503
        assert res.json() == {
            "error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}
        }
        res = await chat(server, fault="status=429")
        assert res.status == 429 and res.json()["error"]["code"] == 429
        res = await chat(server, fault="hang", idle_timeout=0.3)
        assert res.raw == b"" and res.ended == "idle"
        await until(lambda: server.cancelled == 1)
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
async def test_non_stream_faults() -> None:
    server = await start()
    try:
        body = {**LONG, "stream": False}
        res = await chat(server, body, fault="reset_after=3")
        assert res.status is None and res.ended == "reset"
        res = await chat(server, body, fault="error_after=3")
        assert res.status == 500 and res.json()["error"]["type"] == "server_error"
        res = await chat(server, body, fault="malformed_after=1")
        assert res.status == 200 and res.complete
        with pytest.raises(ValueError):
            res.json()
        res = await chat(server, body, fault="split_utf8,token_delay=1ms")
        assert res.json()["choices"][0]["message"]["content"] == "".join(expected_text(body)[0])
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_process_level_request_faults_and_live_control() -> None:
    server = await start("reset_after=2")
    try:
        assert len((await chat(server)).data) == 2  # --fault default applies
        # The X-Fault header replaces the defaults for one request ("" = none).
        assert len((await chat(server, fault="")).data) == TOTAL_EVENTS
        assert len((await chat(server, fault="drop_after=4")).data) == 4
        # A live set replaces the defaults until cleared.
        url = ("127.0.0.1", server.port)
        res = await raw_request(reactor, *url, "POST", "/_fault", "close_after=3")
        assert res.status == 200 and res.json()["live"] == "close_after=3"
        assert len((await chat(server)).data) == 3
        res = await raw_request(reactor, *url, "POST", "/_fault", {"spec": "stall_after=1"})
        assert res.json()["effective"] == "stall_after=1"
        assert len((await chat(server, idle_timeout=0.2)).data) == 1
        res = await raw_request(reactor, *url, "POST", "/_fault", "load_delay=1s")
        assert res.status == 400  # process faults cannot be set live
        res = await raw_request(reactor, *url, "DELETE", "/_fault")
        assert res.json()["live"] is None
        assert len((await chat(server)).data) == 2
        res = await raw_request(reactor, *url, "GET", "/_fault")
        assert res.json()["process"] == "" and res.json()["request_default"] == "reset_after=2"
        bad = await chat(server, fault="bogus")
        assert bad.status == 400 and "X-Fault" in bad.json()["error"]["message"]
    finally:
        await server.stop()


async def _hit_pattern(seed: int) -> list[bool]:
    server = await start("p=0.5,drop_after=1", seed=seed)
    try:
        out = []
        for _ in range(12):
            res = await chat(server, wait_close=False)
            out.append(len(res.data) == 1)
        return out
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_probability_hits_a_reproducible_subset() -> None:
    first = await _hit_pattern(seed=11)
    assert first == await _hit_pattern(seed=11)
    assert 0 < sum(first) < len(first)
    assert first != await _hit_pattern(seed=12)


@pytest_twisted.ensureDeferred
async def test_jitter_varies_token_gaps() -> None:
    server = await start(seed=1)
    try:
        res = await chat(server, fault="token_delay=40ms,jitter=25ms")
        times = res.item_times[1:-2]  # the 10 token events
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(gaps) == 9 and min(gaps) >= 0.005
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
