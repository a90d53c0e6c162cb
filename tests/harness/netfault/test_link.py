"""Tests for harness.netfault._link: chain edits at runtime, chain order, backpressure."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from harness.netfault import (
    HIGH_WATER,
)
from tests.harness.netfault.support import Collector, Env, FakeNet, reactor, sleep

pytestmark = pytest.mark.timeout(20)


def test_clock_runtime_add_and_remove_flushes_held_data() -> None:
    net = FakeNet()
    conn = net.connect()
    conn.from_server(b"1")
    assert conn.to_client() == b"1"
    net.proxy.add_toxic("latency", latency=1000)
    conn.from_server(b"2")
    conn.from_server(b"3")
    net.reactor.advance(0.5)
    assert conn.to_client() == b""
    net.proxy.remove_toxic("latency_downstream")
    # Held data leaves at once, in order (Toxiproxy never drops it on the floor).
    assert conn.to_client() == b"23"
    conn.from_server(b"4")
    assert conn.to_client() == b"4"
    assert net.reactor.getDelayedCalls() == []


def test_clock_removing_timeout_closes_like_toxiproxy() -> None:
    net = FakeNet()
    net.proxy.add_toxic("timeout", timeout=0)
    conn = net.connect()
    conn.from_server(b"lost")
    net.reactor.advance(10)
    assert conn.to_client() == b"" and not conn.client_t.disconnecting
    net.proxy.remove_toxic("timeout_downstream")
    assert conn.client_t.disconnecting


def test_clock_chain_order_limit_then_latency() -> None:
    net = FakeNet()
    net.proxy.add_toxic("limit_data", bytes=4)
    net.proxy.add_toxic("latency", latency=100)
    conn = net.connect()
    conn.from_server(b"abcdefgh")
    assert conn.to_client() == b""
    net.reactor.advance(0.1)
    # the data leaves, then the end-of-stream right behind it
    assert conn.to_client() == b"abcd"
    assert conn.client_t.disconnecting


def test_clock_backpressure_pauses_source() -> None:
    net = FakeNet()
    net.proxy.add_toxic("latency", latency=100)
    conn = net.connect()
    assert conn.server_t.producerState == "producing"
    conn.from_server(b"x" * (HIGH_WATER + 1))
    assert conn.server_t.producerState == "paused"
    net.reactor.advance(0.1)
    assert conn.server_t.producerState == "producing"
    assert len(conn.to_client()) == HIGH_WATER + 1
    # The client socket's buffer is full: the client transport pauses our link.
    assert conn.client_t.producer is not None
    conn.client_t.producer.pauseProducing()
    assert conn.server_t.producerState == "paused"
    conn.client_t.producer.resumeProducing()
    assert conn.server_t.producerState == "producing"


@pytest_twisted.ensureDeferred
async def test_backpressure_stops_reading_upstream_while_client_does_not_read(env: Env) -> None:
    payload = b"p" * (24 * 1024 * 1024)  # more than the kernel buffers can hide
    proxy = await env.proxy(env.upstream(payload))
    client = Collector()
    client.connectionMade = lambda: client.transport.pauseProducing()  # type: ignore[method-assign,union-attr]
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.port), client)
    env.clients.append(client)
    await sleep(0.3)
    assert client.size == 0
    # The proxy stopped reading from the server instead of buffering 24 MB.
    assert proxy.stats().downstream.bytes_in < len(payload) // 2
    client.transport.resumeProducing()  # type: ignore[union-attr]
    assert len(await client.wait_bytes(len(payload))) == len(payload)
    assert proxy.stats().downstream.bytes_out == len(payload)
