"""Tests for harness.netfault: the Toxiproxy-like TCP fault proxy.

Two kinds of test:
- real loopback sockets with the real reactor and a tiny upstream server started in
  the test (pass-through, each toxic end to end, control API, CLI);
- ``MemoryReactorClock`` + ``StringTransport`` for exact timing, toxicity, runtime
  add/remove and backpressure, with no wall clock involved.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    ProcessDone,
    ProcessTerminated,
)
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool

from harness.netfault import (
    HIGH_WATER,
    DuplicateToxicError,
    FaultProxy,
    InvalidToxicError,
    Toxic,
    ToxicNotFoundError,
    main,
    parse_address,
    parse_toxic_spec,
)

reactor: Any = _reactor
pytestmark = pytest.mark.timeout(20)


# --------------------------------------------------------------------------- helpers


class Collector(Protocol):
    """Client side: records every read with its arrival time and how it ended."""

    def __init__(self) -> None:
        self.chunks: list[tuple[float, bytes]] = []
        self.size = 0
        self.reason: Failure | None = None
        self.lost: Deferred[None] = Deferred()  # fires once closed; see ``ended``
        self._waiters: list[tuple[int, Deferred[bytes]]] = []
        self.connected_at = 0.0

    def connectionMade(self) -> None:
        self.connected_at = time.monotonic()

    @property
    def data(self) -> bytes:
        return b"".join(chunk for _, chunk in self.chunks)

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append((time.monotonic(), data))
        self.size += len(data)
        for item in list(self._waiters):
            if self.size >= item[0]:
                self._waiters.remove(item)
                item[1].callback(self.data)

    def wait_bytes(self, n: int) -> Deferred[bytes]:
        """Fires with everything received once at least ``n`` bytes arrived; fails if
        the connection ends first."""
        d: Deferred[bytes] = Deferred()
        if self.size >= n:
            d.callback(self.data)
        elif self.reason is not None:
            d.errback(AssertionError(f"closed after {self.size} bytes, wanted {n}"))
        else:
            self._waiters.append((n, d))
        return d

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason
        self.lost_at = time.monotonic()
        for _, d in self._waiters:
            d.errback(AssertionError(f"closed after {self.size} bytes: {reason.value!r}"))
        self._waiters.clear()
        self.lost.callback(None)  # a Failure as result would run the errbacks

    async def ended(self) -> Failure:
        """Wait for the connection to end; the reason it ended."""
        await self.lost
        assert self.reason is not None
        return self.reason

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class Upstream(Protocol):
    """Test upstream server: echo, or send a fixed payload (and maybe close)."""

    def __init__(self, owner: UpstreamFactory) -> None:
        self.owner = owner
        self.lost: Deferred[None] = Deferred()
        self.received = b""

    def connectionMade(self) -> None:
        self.owner.protocols.append(self)
        if self.owner.payload is not None:
            assert self.transport is not None
            self.transport.write(self.owner.payload)
            if self.owner.close_after_payload:
                self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.owner.payload is None:
            assert self.transport is not None
            self.transport.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


class UpstreamFactory(Factory):
    noisy = False

    def __init__(self, payload: bytes | None = None, close_after_payload: bool = False) -> None:
        self.payload = payload
        self.close_after_payload = close_after_payload
        self.protocols: list[Upstream] = []

    def buildProtocol(self, addr: Any) -> Upstream:
        return Upstream(self)


class Env:
    """Owns every socket a test opens and closes all of them at the end."""

    def __init__(self) -> None:
        self.listeners: list[Any] = []
        self.factories: list[UpstreamFactory] = []
        self.proxies: list[FaultProxy] = []
        self.clients: list[Collector] = []

    def upstream(self, payload: bytes | None = None, close_after_payload: bool = False) -> int:
        factory = UpstreamFactory(payload, close_after_payload)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.listeners.append(port)
        self.factories.append(factory)
        return int(port.getHost().port)

    async def proxy(self, upstream_port: int, seed: int = 0) -> FaultProxy:
        proxy = FaultProxy(listen_port=0, upstream=("127.0.0.1", upstream_port), seed=seed)
        self.proxies.append(proxy)
        port = await proxy.start()
        assert port == proxy.port and port > 0
        return proxy

    async def connect(self, port: int) -> Collector:
        client = Collector()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        await connectProtocol(endpoint, client)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            if client.reason is None and client.transport is not None:
                client.transport.abortConnection()  # type: ignore[attr-defined]
            await client.lost
        for proxy in self.proxies:
            await proxy.stop()
        for factory in self.factories:
            for proto in factory.protocols:
                if proto.transport is not None and proto.transport.connected:  # type: ignore[attr-defined]
                    proto.transport.abortConnection()  # type: ignore[attr-defined]
                await proto.lost
        for port in self.listeners:
            await port.stopListening()


@pytest_twisted.async_yield_fixture
async def env() -> Any:
    e = Env()
    yield e
    await e.close()


def sleep(seconds: float) -> Deferred[None]:
    """Only for "nothing happens during this time" checks."""
    return deferLater(reactor, seconds, lambda: None)


# ---- MemoryReactorClock world: exact timing, no sockets


class FakeConn:
    def __init__(self, net: FakeNet) -> None:
        addr = IPv4Address("TCP", "127.0.0.1", 40000)
        self.client: Any = net.listen_factory.buildProtocol(addr)
        self.client_t = StringTransport(lenient=True)
        self.client.makeConnection(self.client_t)
        factory: Any = net.reactor.tcpClients[-1][2]
        self.server: Any = factory.buildProtocol(addr)
        self.server_t = StringTransport(lenient=True)
        self.server.makeConnection(self.server_t)

    def to_client(self) -> bytes:
        """Bytes the proxy wrote to the client so far (consumed)."""
        value = self.client_t.value()
        self.client_t.clear()
        return value

    def to_server(self) -> bytes:
        value = self.server_t.value()
        self.server_t.clear()
        return value

    def from_server(self, data: bytes) -> None:
        self.server.dataReceived(data)

    def from_client(self, data: bytes) -> None:
        self.client.dataReceived(data)

    def server_closes(self) -> None:
        self.server.connectionLost(Failure(ConnectionDone()))

    def client_closes(self) -> None:
        self.client.connectionLost(Failure(ConnectionDone()))


class FakeNet:
    def __init__(self, seed: int = 0) -> None:
        self.reactor = MemoryReactorClock()
        self.proxy = FaultProxy(upstream=("127.0.0.1", 9), seed=seed, reactor=self.reactor)
        self.proxy.start()
        self.listen_factory: Any = self.reactor.tcpServers[0][1]

    def connect(self) -> FakeConn:
        return FakeConn(self)


# --------------------------------------------------------------------------- validation


def test_toxic_defaults_and_json_shape() -> None:
    toxic = Toxic.create("latency", attributes={"latency": 100})
    assert toxic.to_json() == {
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": {"latency": 100, "jitter": 0},
    }
    assert Toxic.from_json(toxic.to_json()) == toxic


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"type": "nope"}, "unknown toxic type"),
        ({"type": "latency", "stream": "sideways"}, "stream must be"),
        ({"type": "latency", "toxicity": 1.5}, "toxicity must be in"),
        ({"type": "latency", "toxicity": "x"}, "toxicity must be a number"),
        ({"type": "latency", "attributes": {"latency": -1}}, ">= 0"),
        ({"type": "latency", "attributes": {"latency": 1.5}}, "must be an integer"),
        ({"type": "latency", "attributes": {"latency": True}}, "must be an integer"),
        ({"type": "latency", "attributes": {"rate": 1}}, "unknown attribute"),
        ({"type": "slicer", "attributes": {"average_size": 0}}, "average_size"),
        (
            {"type": "slicer", "attributes": {"average_size": 10, "size_variation": 10}},
            "smaller than",
        ),
        ({"type": "latency", "colour": "red"}, "unknown field"),
        ({"stream": "upstream"}, "missing field 'type'"),
        ({"type": "latency", "name": ""}, "name must be"),
        ([], "JSON object"),
    ],
)
def test_toxic_validation_messages(obj: Any, message: str) -> None:
    with pytest.raises(InvalidToxicError, match=message):
        Toxic.from_json(obj)


def test_parse_toxic_spec_and_address() -> None:
    toxic = parse_toxic_spec("latency:upstream:latency=100,jitter=10,toxicity=0.5,name=slow")
    assert (toxic.name, toxic.type, toxic.stream, toxic.toxicity) == (
        "slow",
        "latency",
        "upstream",
        0.5,
    )
    assert toxic.attributes == {"latency": 100, "jitter": 10}
    assert parse_toxic_spec("timeout").to_json()["attributes"] == {"timeout": 0}
    with pytest.raises(InvalidToxicError, match="KEY=VALUE"):
        parse_toxic_spec("latency:downstream:latency")
    with pytest.raises(InvalidToxicError, match="integer"):
        parse_toxic_spec("latency:downstream:latency=fast")
    assert parse_address("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_address("[::1]:0") == ("::1", 0)
    for bad in ("127.0.0.1", ":80", "host:x", "host:70000"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_add_remove_errors() -> None:
    net = FakeNet()
    net.proxy.add_toxic("latency", latency=1)
    with pytest.raises(DuplicateToxicError):
        net.proxy.add_toxic("latency", latency=2)
    with pytest.raises(ToxicNotFoundError):
        net.proxy.remove_toxic("nope")
    with pytest.raises(InvalidToxicError):
        net.proxy.add_toxic("latency", jitter=-5, name="other")
    assert [t.name for t in net.proxy.toxics()] == ["latency_downstream"]


# --------------------------------------------------------------------------- clock-driven


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


# --------------------------------------------------------------------------- real sockets


@pytest_twisted.ensureDeferred
async def test_passthrough_both_ways(env: Env) -> None:
    proxy = await env.proxy(env.upstream())
    client = await env.connect(proxy.port)
    payload = random.Random(5).randbytes(200_000)
    client.write(payload)
    assert await client.wait_bytes(len(payload)) == payload
    assert env.factories[0].protocols[0].received == payload
    stats = proxy.stats()
    assert stats.connections_total == 1 and stats.connections_active == 1
    assert stats.upstream.bytes_in == stats.upstream.bytes_out == len(payload)
    assert stats.downstream.bytes_in == stats.downstream.bytes_out == len(payload)
    # client close -> upstream connection closes too
    client.transport.loseConnection()  # type: ignore[union-attr]
    await env.factories[0].protocols[0].lost
    assert (await client.ended()).check(ConnectionDone)


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


@pytest_twisted.ensureDeferred
async def test_toxicity_over_real_connections(env: Env) -> None:
    proxy = await env.proxy(env.upstream())
    proxy.add_toxic("reset_peer", timeout=0, toxicity=0.0, name="never")
    for _ in range(3):
        client = await env.connect(proxy.port)
        client.write(b"ok")
        assert await client.wait_bytes(2) == b"ok"
    proxy.remove_toxic("never")
    proxy.add_toxic("reset_peer", timeout=0, toxicity=1.0, name="always")
    for _ in range(3):
        client = await env.connect(proxy.port)
        client.write(b"ok")
        assert not (await client.ended()).check(ConnectionDone)
    # the three idle connections still open got it too (runtime add), plus three new
    assert proxy.stats().toxics["always"] == {"applied": 6, "skipped": 0}


@pytest_twisted.ensureDeferred
async def test_add_and_remove_on_open_connection(env: Env) -> None:
    proxy = await env.proxy(env.upstream())
    client = await env.connect(proxy.port)
    client.write(b"a")
    await client.wait_bytes(1)
    proxy.add_toxic("latency", latency=5000)
    client.write(b"b")
    await sleep(0.05)
    assert client.data == b"a"  # held by the new toxic
    proxy.remove_toxic("latency_downstream")
    assert await client.wait_bytes(2) == b"ab"  # flushed at once, not after 5 s
    client.write(b"c")
    assert await client.wait_bytes(3) == b"abc"


@pytest_twisted.ensureDeferred
async def test_stop_closes_listener_and_connections(env: Env) -> None:
    proxy = await env.proxy(env.upstream())
    port = proxy.port
    client = await env.connect(port)
    client.write(b"x")
    await client.wait_bytes(1)
    await proxy.stop()
    await client.lost
    assert proxy.stats().connections_active == 0
    with pytest.raises(ConnectionRefusedError):  # twisted.internet.error
        await env.connect(port)


# --------------------------------------------------------------------------- control API


@pytest_twisted.ensureDeferred
async def test_control_api_round_trip_and_errors(env: Env) -> None:
    proxy = await env.proxy(env.upstream(b"q" * 100))
    control = await proxy.start_control()
    assert control == proxy.control_port
    base = f"http://127.0.0.1:{control}"
    pool = HTTPConnectionPool(reactor, persistent=False)

    async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"pool": pool}
        if body is not None:
            kwargs["data"] = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = await treq.request(method, base + path, **kwargs)
        text = await response.content()
        return response.code, json.loads(text) if text else None

    assert await call("GET", "/toxics") == (200, [])
    toxic = {
        "name": "cut",
        "type": "limit_data",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": {"bytes": 10},
    }
    assert await call("POST", "/toxics", toxic) == (200, toxic)
    status, body = await call("POST", "/toxics", toxic)
    assert status == 409 and body["status"] == 409 and "already exists" in body["error"]
    status, body = await call("POST", "/toxics", {"type": "latency", "attributes": {"x": 1}})
    assert status == 400 and "unknown attribute" in body["error"]
    status, body = await call("POST", "/toxics", {"type": "warp"})
    assert status == 400 and "unknown toxic type" in body["error"]
    status, body = await call("POST", "/toxics", b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]
    assert await call("GET", "/toxics") == (200, [toxic])
    assert await call("GET", "/toxics/cut") == (200, toxic)

    # the toxic added over HTTP acts on traffic
    client = await env.connect(proxy.port)
    await client.lost
    assert client.data == b"q" * 10

    status, stats = await call("GET", "/stats")
    assert status == 200 and stats["connections_total"] == 1
    assert stats["downstream"]["bytes_out"] == 10
    assert stats["toxics"] == {"cut": {"applied": 1, "skipped": 0}}

    status, body = await call("DELETE", "/toxics/nope")
    assert status == 404 and "nope" in body["error"]
    assert await call("DELETE", "/toxics/cut") == (204, None)
    assert await call("POST", "/toxics", {"type": "latency"}) == (
        200,
        {
            "name": "latency_downstream",
            "type": "latency",
            "stream": "downstream",
            "toxicity": 1.0,
            "attributes": {"latency": 0, "jitter": 0},
        },
    )
    assert await call("POST", "/reset") == (204, None)
    assert await call("GET", "/toxics") == (200, [])
    assert (await call("GET", "/nowhere"))[0] == 404
    assert (await call("PUT", "/toxics"))[0] == 405
    status, info = await call("GET", "/")
    assert status == 200 and info["listen"] == f"127.0.0.1:{proxy.port}"


# --------------------------------------------------------------------------- CLI


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.netfault", *args],
        capture_output=True,
        text=True,
        timeout=15,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--upstream"),
        (["--upstream", "localhost"], "expected HOST:PORT"),
        (["--upstream", "127.0.0.1:99999"], "0..65535"),
        (["--upstream", "127.0.0.1:1", "--toxic", "warp"], "unknown toxic type"),
        (["--upstream", "127.0.0.1:1", "--toxic", "latency:sideways"], "stream must be"),
        (["--upstream", "127.0.0.1:1", "--toxic", "latency::latency=-3"], ">= 0"),
        (["--upstream", "127.0.0.1:1", "--toxic", "latency", "--toxic", "latency"], "duplicate"),
        (["--upstream", "127.0.0.1:1", "--seed", "x"], "--seed"),
    ],
)
def test_cli_rejects_bad_arguments_in_process(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_bad_arguments_subprocess_exit_2() -> None:
    result = _run_cli("--upstream", "127.0.0.1:1", "--toxic", "slicer::average_size=0")
    assert result.returncode == 2
    assert "average_size" in result.stderr and result.stdout == ""


def test_cli_port_in_use_exits_1() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run_cli("--listen", f"127.0.0.1:{port}", "--upstream", "127.0.0.1:1")
    assert result.returncode == 1
    assert "cannot listen" in result.stderr and result.stdout == ""


class LineReader(ProcessProtocol):
    def __init__(self, want: int) -> None:
        self.want = want
        self.buffer = b""
        self.lines: Deferred[list[str]] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self.stderr = b""

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        lines = self.buffer.decode().splitlines()
        if not self.lines.called and self.buffer.count(b"\n") >= self.want:
            self.lines.callback(lines)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        if not self.lines.called:
            self.lines.errback(AssertionError(f"exited early: {self.stderr!r}"))
        self.reason = reason
        self.ended.callback(None)


@pytest_twisted.ensureDeferred
async def test_cli_runs_proxy_with_toxic_and_control(env: Env) -> None:
    upstream = env.upstream()
    reader = LineReader(want=2)
    process = reactor.spawnProcess(
        reader,
        sys.executable,
        [
            sys.executable,
            "-m",
            "harness.netfault",
            "--upstream",
            f"127.0.0.1:{upstream}",
            "--toxic",
            "limit_data:downstream:bytes=3",
            "--seed",
            "9",
        ],
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        lines = await reader.lines
        assert lines[0].startswith("listening on 127.0.0.1:")
        assert lines[1].startswith("control on http://127.0.0.1:")
        port = int(lines[0].rsplit(":", 1)[1])
        control = lines[1].removeprefix("control on ")
        client = await env.connect(port)
        client.write(b"hello")
        await client.lost
        assert client.data == b"hel"
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = await treq.get(control + "/toxics", pool=pool)
        assert [t["type"] for t in await response.json()] == ["limit_data"]
    finally:
        process.signalProcess("TERM")
        await reader.ended
    reason = reader.reason
    assert reason is not None
    assert reason.check(ProcessDone, ProcessTerminated)
    assert getattr(reason.value, "exitCode", None) == 0, reader.stderr
