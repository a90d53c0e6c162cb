"""Tests for harness.netfault._toxic_stages: what each toxic does to the bytes.

First on a ``MemoryReactorClock`` for exact timing, then end to end over real
loopback sockets.
"""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
)

from tests.harness.netfault.support import Env, FakeNet, sleep

pytestmark = pytest.mark.timeout(20)


def test_clock_latency_delays_each_chunk_in_order() -> None:
    net = FakeNet()
    net.proxy.add_toxic("latency", latency=100)
    conn = net.connect()
    conn.from_server(b"a")
    net.reactor.advance(0.05)
    conn.from_server(b"b")
    net.reactor.advance(0.049)  # t = 99 ms
    assert conn.to_client() == b""
    net.reactor.advance(0.002)  # t = 101 ms
    assert conn.to_client() == b"a"
    net.reactor.advance(0.047)  # t = 148 ms
    assert conn.to_client() == b""
    net.reactor.advance(0.002)  # t = 150 ms (+ float slack)
    net.reactor.advance(0.001)
    assert conn.to_client() == b"b"
    # upstream direction is untouched
    conn.from_client(b"req")
    assert conn.to_server() == b"req"


def test_clock_latency_jitter_keeps_order() -> None:
    net = FakeNet(seed=3)
    net.proxy.add_toxic("latency", latency=50, jitter=40)
    conn = net.connect()
    sent = [bytes([65 + i]) * 3 for i in range(20)]
    for piece in sent:
        conn.from_server(piece)
        net.reactor.advance(0.001)
    out = b""
    for _ in range(200):
        net.reactor.advance(0.001)
        out += conn.to_client()
    assert out == b"".join(sent)


def test_clock_bandwidth_paces() -> None:
    net = FakeNet()
    net.proxy.add_toxic("bandwidth", rate=10)  # 10 KB/s = 10 bytes per ms
    conn = net.connect()
    conn.from_server(b"x" * 2500)  # 250 ms worth; Toxiproxy-style 100 ms pieces
    # 1000-byte pieces leave at 100 and 200 ms, the last 500 bytes at 250 ms.
    for step, expected in [
        (0.099, 0),
        (0.002, 1000),  # t = 101 ms
        (0.098, 0),  # t = 199 ms
        (0.002, 1000),  # t = 201 ms
        (0.048, 0),  # t = 249 ms
        (0.002, 500),  # t = 251 ms
        (1.0, 0),
    ]:
        net.reactor.advance(step)
        assert len(conn.to_client()) == expected


def test_clock_slicer_pieces_and_spacing() -> None:
    net = FakeNet(seed=1)
    net.proxy.add_toxic("slicer", average_size=10, size_variation=3, delay=1000)
    conn = net.connect()
    payload = bytes(range(256)) * 2
    conn.from_server(payload)
    pieces = [conn.to_client()]  # the first piece leaves at once
    for _ in range(100):
        net.reactor.advance(0.001)
        piece = conn.to_client()
        if piece:
            pieces.append(piece)
    assert b"".join(pieces) == payload
    assert len(pieces) >= 30
    assert all(0 < len(p) <= 13 for p in pieces)


def test_clock_slow_close_delays_end() -> None:
    net = FakeNet()
    net.proxy.add_toxic("slow_close", delay=200)
    conn = net.connect()
    conn.from_server(b"bye")
    assert conn.to_client() == b"bye"
    conn.server_closes()
    net.reactor.advance(0.199)
    assert not conn.client_t.disconnecting
    net.reactor.advance(0.001)
    assert conn.client_t.disconnecting


def test_clock_limit_data_exact() -> None:
    net = FakeNet()
    net.proxy.add_toxic("limit_data", bytes=10)
    conn = net.connect()
    conn.from_server(b"12345678")
    assert not conn.client_t.disconnecting
    conn.from_server(b"abcdef")
    assert conn.to_client() == b"12345678ab"
    assert conn.client_t.disconnecting and not conn.client_t.disconnected  # clean close
    assert net.proxy.stats().downstream.bytes_dropped == 4


def test_clock_timeout_drops_then_closes() -> None:
    net = FakeNet()
    net.proxy.add_toxic("timeout", timeout=100, stream="upstream")
    conn = net.connect()
    conn.from_client(b"request")
    net.reactor.advance(0.099)
    assert conn.to_server() == b""
    assert not conn.server_t.disconnecting
    net.reactor.advance(0.001)
    assert conn.server_t.disconnecting


def test_clock_reset_peer_aborts_both_sides_after_first_data() -> None:
    net = FakeNet()
    net.proxy.add_toxic("reset_peer", timeout=50)
    conn = net.connect()
    net.reactor.advance(1.0)  # idle: nothing happens until data flows
    assert not conn.client_t.disconnected
    conn.from_server(b"data")
    net.reactor.advance(0.049)
    assert not conn.client_t.disconnected
    net.reactor.advance(0.002)
    assert conn.client_t.disconnected and conn.server_t.disconnected  # abortConnection
    assert conn.to_client() == b""
    assert net.proxy.stats().resets == 1


@pytest_twisted.ensureDeferred
async def test_latency_adds_delay(env: Env) -> None:
    proxy = await env.proxy(env.upstream())
    proxy.add_toxic("latency", latency=60)
    client = await env.connect(proxy.port)
    start = time.monotonic()
    client.write(b"ping")
    assert await client.wait_bytes(4) == b"ping"
    assert 0.055 <= time.monotonic() - start < 3.0


@pytest_twisted.ensureDeferred
async def test_slicer_splits_one_write_into_several_reads(env: Env) -> None:
    payload = bytes(range(256)) * 4
    proxy = await env.proxy(env.upstream(payload))
    proxy.add_toxic("slicer", average_size=100, size_variation=20, delay=5000)
    client = await env.connect(proxy.port)
    assert await client.wait_bytes(len(payload)) == payload
    assert len(client.chunks) >= 4, [len(c) for _, c in client.chunks]


@pytest_twisted.ensureDeferred
async def test_reset_peer_is_not_a_clean_close(env: Env) -> None:
    proxy = await env.proxy(env.upstream())
    proxy.add_toxic("reset_peer", timeout=20)
    client = await env.connect(proxy.port)
    start = time.monotonic()
    client.write(b"hello?")
    reason = await client.ended()
    assert time.monotonic() - start >= 0.015
    assert reason.check(ConnectionLost) and not reason.check(ConnectionDone), reason
    assert client.data == b""
    assert proxy.stats().resets == 1


@pytest_twisted.ensureDeferred
async def test_limit_data_closes_after_exactly_n_bytes(env: Env) -> None:
    proxy = await env.proxy(env.upstream(b"z" * 5000))
    proxy.add_toxic("limit_data", bytes=1234)
    client = await env.connect(proxy.port)
    reason = await client.ended()
    assert reason.check(ConnectionDone)
    assert client.data == b"z" * 1234
    await env.factories[0].protocols[0].lost  # upstream side closed too


@pytest_twisted.ensureDeferred
async def test_timeout_holds_data_then_closes(env: Env) -> None:
    proxy = await env.proxy(env.upstream())
    proxy.add_toxic("timeout", timeout=0, name="hold")
    client = await env.connect(proxy.port)
    client.write(b"anyone?")
    await sleep(0.1)
    assert client.data == b"" and client.reason is None  # held open, nothing through
    assert env.factories[0].protocols[0].received == b"anyone?"
    proxy.remove_toxic("hold")  # Toxiproxy closes the connection on removal
    assert (await client.ended()).check(ConnectionDone)

    proxy.add_toxic("timeout", timeout=50)
    client = await env.connect(proxy.port)
    start = time.monotonic()
    client.write(b"x")
    reason = await client.ended()
    assert time.monotonic() - start >= 0.04
    assert reason.check(ConnectionDone) and client.data == b""


@pytest_twisted.ensureDeferred
async def test_bandwidth_paces(env: Env) -> None:
    payload = b"b" * 20_000
    proxy = await env.proxy(env.upstream(payload))
    proxy.add_toxic("bandwidth", rate=200)  # 200 KB/s -> 100 ms for 20 KB
    client = await env.connect(proxy.port)
    await client.wait_bytes(len(payload))
    elapsed = client.chunks[-1][0] - client.connected_at
    assert 0.09 <= elapsed < 3.0
    rate = len(payload) / elapsed
    assert 5_000 < rate <= 220_000


@pytest_twisted.ensureDeferred
async def test_slow_close_delays_the_close(env: Env) -> None:
    proxy = await env.proxy(env.upstream(b"bye", close_after_payload=True))
    proxy.add_toxic("slow_close", delay=80)
    client = await env.connect(proxy.port)
    reason = await client.ended()
    assert reason.check(ConnectionDone) and client.data == b"bye"
    assert client.lost_at - client.chunks[0][0] >= 0.07
