"""Slots (-np), queueing and cancellation on client disconnect."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from harness.fake_llama import FakeServer
from harness.fake_llama.rawhttp import RawResponse, raw_request
from tests.harness.fake_llama._support import start
from tests.polling import until

BODY = {
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "ignore_eos": True,
    "max_tokens": 5,
}


def chat(server: FakeServer, body: Any = BODY, fault: str | None = None, **kw: Any) -> Any:
    headers = {"X-Fault": fault} if fault is not None else None
    return raw_request(
        reactor, "127.0.0.1", server.port, "POST", "/v1/chat/completions", body, headers, **kw
    )


@pytest_twisted.ensureDeferred
async def test_one_slot_queues_the_second_request() -> None:
    server = await start(parallel=1, faults="token_delay=40ms", metrics=True)
    try:
        first = chat(server)
        await until(lambda: server.slots.busy == 1)
        second = chat(server)
        await until(lambda: server.slots.queued == 1)
        slots = await raw_request(reactor, "127.0.0.1", server.port, "GET", "/slots")
        assert slots.json()[0]["is_processing"] is True
        metrics = await raw_request(reactor, "127.0.0.1", server.port, "GET", "/metrics")
        assert "llamacpp:requests_deferred 1" in metrics.body.decode()
        a, b = await gatherResults([first, second])
        assert a.complete and b.complete and a.data[-1] == b.data[-1] == "[DONE]"
        # The queued request got its headers only once the first one was done: after
        # its second-to-last token (the last token, finish and [DONE] come together).
        assert b.t_headers is not None and b.t_headers > a.item_times[-4] + 0.02
        assert server.slots.busy == 0 and server.slots.queued == 0
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_two_slots_run_concurrently() -> None:
    server = await start(parallel=2, faults="token_delay=40ms")
    try:
        a, b = await gatherResults([chat(server), chat(server)])
        assert a.complete and b.complete
        assert b.t_headers is not None and b.t_headers < a.item_times[-1]
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_client_disconnect_cancels_generation_and_frees_slot() -> None:
    server = await start(parallel=1, faults="token_delay=50ms")
    try:
        res: RawResponse = await chat(server, disconnect_after_events=2)
        assert res.ended == "client" and len(res.data) == 2
        await until(lambda: server.cancelled == 1)
        assert server.slots.busy == 0
        assert any("stop: cancel task" in line for line in server.log_lines)
        # The slot serves the next request.
        ok = await chat(server, fault="")
        assert ok.complete and ok.data[-1] == "[DONE]"
        assert server.cancelled == 1 and server.stats.completed == 1
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_leaving_while_queued_or_non_stream_cancels_too() -> None:
    server = await start(parallel=1)
    try:
        holder = chat(server, fault="stall_after=1", idle_timeout=0.5)
        await until(lambda: server.slots.busy == 1)
        queued: RawResponse = await chat(server, idle_timeout=0.2)
        assert queued.ended == "idle" and queued.raw == b""
        await until(lambda: server.cancelled == 1)
        assert server.slots.queued == 0
        held: RawResponse = await holder
        assert held.ended == "idle" and len(held.data) == 1
        await until(lambda: server.cancelled == 2 and server.slots.busy == 0)

        plain = {**BODY, "stream": False}
        res = await chat(server, plain, fault="token_delay=100ms", idle_timeout=0.15)
        assert res.ended == "idle" and res.raw == b""
        await until(lambda: server.cancelled == 3 and server.slots.busy == 0)
        assert server.requests == 3
    finally:
        await server.stop()
