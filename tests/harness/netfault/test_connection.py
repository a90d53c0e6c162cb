"""Tests for harness.netfault._connection: closing order, the paused client, the
upstream going away or never answering, and the seeded toxicity roll.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.error import (
    ConnectionDone,
)
from twisted.internet.testing import StringTransport

from tests.harness.netfault.support import Env, FakeNet

pytestmark = pytest.mark.timeout(20)


def test_clock_client_close_propagates_after_held_data() -> None:
    net = FakeNet()
    net.proxy.add_toxic("latency", latency=100, stream="upstream")
    conn = net.connect()
    conn.from_client(b"last words")
    conn.client_closes()
    assert not conn.server_t.disconnecting
    net.reactor.advance(0.1)
    assert conn.to_server() == b"last words"
    assert conn.server_t.disconnecting
    conn.server_closes()
    assert net.proxy.stats().connections_active == 0
    assert net.reactor.getDelayedCalls() == []


def test_clock_client_paused_until_upstream_connects() -> None:
    net = FakeNet()
    addr = IPv4Address("TCP", "127.0.0.1", 40000)
    client: Any = net.listen_factory.buildProtocol(addr)
    transport = StringTransport(lenient=True)
    client.makeConnection(transport)
    assert transport.producerState == "paused"
    factory: Any = net.reactor.tcpClients[-1][2]
    server: Any = factory.buildProtocol(addr)
    server.makeConnection(StringTransport(lenient=True))
    assert transport.producerState == "producing"


def _applied_pattern(seed: int, toxicity: float, n: int) -> list[bool]:
    net = FakeNet(seed=seed)
    net.proxy.add_toxic("latency", latency=1000, toxicity=toxicity)
    pattern = []
    for _ in range(n):
        conn = net.connect()
        conn.from_server(b"?")
        pattern.append(conn.to_client() == b"")  # held back -> toxic applied
    stats = net.proxy.stats().toxics["latency_downstream"]
    assert stats == {"applied": sum(pattern), "skipped": n - sum(pattern)}
    return pattern


def test_toxicity_zero_one_and_seeded_reproducible() -> None:
    assert _applied_pattern(0, 0.0, 20) == [False] * 20
    assert _applied_pattern(0, 1.0, 20) == [True] * 20
    first = _applied_pattern(42, 0.5, 60)
    assert first == _applied_pattern(42, 0.5, 60)
    assert first != _applied_pattern(43, 0.5, 60)
    assert 10 < sum(first) < 50


@pytest_twisted.ensureDeferred
async def test_upstream_close_reaches_client(env: Env) -> None:
    proxy = await env.proxy(env.upstream(b"hello", close_after_payload=True))
    client = await env.connect(proxy.port)
    reason = await client.ended()
    assert reason.check(ConnectionDone)
    assert client.data == b"hello"


@pytest_twisted.ensureDeferred
async def test_upstream_refused_closes_client(env: Env) -> None:
    port = env.upstream()
    await env.listeners.pop().stopListening()  # nothing listens there now
    proxy = await env.proxy(port)
    client = await env.connect(proxy.port)
    await client.lost
    assert client.data == b""
    assert proxy.stats().upstream_connect_failures == 1
