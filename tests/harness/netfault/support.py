"""Shared test worlds for the netfault tests.

Two kinds of test:
- real loopback sockets with the real reactor and a tiny upstream server started in
  the test (``Collector``, ``Upstream``, ``Env``; the ``env`` fixture is in conftest);
- ``MemoryReactorClock`` + ``StringTransport`` for exact timing, toxicity, runtime
  add/remove and backpressure, with no wall clock involved (``FakeNet``, ``FakeConn``).
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from harness.netfault import FaultProxy

reactor: Any = _reactor


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


def sleep(seconds: float) -> Deferred[None]:
    """Only for "nothing happens during this time" checks."""
    return deferLater(reactor, seconds, lambda: None)


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
