"""Proxied connections: the accepted client socket, its upstream socket, the links between.

``ListenFactory`` accepts a client; ``Connection`` pauses it, connects upstream, then
builds the two ``_link.Link`` directions from the proxy's current toxics. ``ProxyCore``
is the part of a ``FaultProxy`` its connections share: where to connect, the toxic
table, the open connections, the live counters and the seeded toxicity roll.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConnector
from twisted.internet.protocol import ClientFactory, Protocol, ServerFactory, connectionDone
from twisted.python.failure import Failure

from harness.netfault._link import Link, Transport
from harness.netfault._stats import ProxyStats
from harness.netfault._toxic import Toxic

# Stand-in for "the reactor": needs IReactorTCP + IReactorTime (and is commonly
# ``twisted.internet.reactor`` or a ``MemoryReactorClock`` in tests).
Reactor = Any


def _tcp(protocol: Protocol) -> Transport:
    return protocol.transport


class ProxyCore:
    """What a proxy shares with its connections: where to connect, the toxic table,
    the open connections and the live counters."""

    def __init__(
        self, reactor: Reactor, upstream: tuple[str, int], seed: int, connect_timeout: float
    ) -> None:
        self.reactor: Reactor = reactor
        self.upstream = upstream
        self.seed = seed
        self.connect_timeout = connect_timeout
        self.toxics: dict[str, Toxic] = {}
        self.connections: dict[int, Connection] = {}
        self.stats = ProxyStats()
        self._next_id = 0

    def register(self, conn: Connection) -> int:
        """A new connection; its id (1, 2, ... in accept order)."""
        self._next_id += 1
        self.connections[self._next_id] = conn
        self.stats.connections_total += 1
        return self._next_id

    def unregister(self, conn: Connection) -> None:
        """Both sockets of ``conn`` are gone."""
        self.connections.pop(conn.id, None)

    def decide(self, conn_id: int, toxic: Toxic) -> bool:
        """Does ``toxic`` apply to connection ``conn_id``? Seeded, order-independent."""
        if toxic.toxicity >= 1.0:
            applies = True
        elif toxic.toxicity <= 0.0:
            applies = False
        else:
            rng = random.Random(f"{self.seed}:{conn_id}:{toxic.name}")
            applies = rng.random() < toxic.toxicity
        counts = self.stats.toxics.get(toxic.name)
        if counts is not None:
            counts["applied" if applies else "skipped"] += 1
        return applies


class ClientSide(Protocol):
    """The accepted client connection."""

    def __init__(self, core: ProxyCore) -> None:
        self.core = core
        self.conn: Connection | None = None

    def connectionMade(self) -> None:
        self.conn = Connection(self.core, self)

    def dataReceived(self, data: bytes) -> None:
        assert self.conn is not None
        self.conn.client_data(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.conn is not None:
            self.conn.client_lost()


class ServerSide(Protocol):
    """The proxy's connection to the upstream server."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def connectionMade(self) -> None:
        self.conn.server_connected(self)

    def dataReceived(self, data: bytes) -> None:
        self.conn.server_data(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.conn.server_lost()


class UpstreamFactory(ClientFactory):
    """Connects one ``Connection`` to the upstream server."""

    noisy = False

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def buildProtocol(self, addr: object) -> ServerSide:
        return ServerSide(self.conn)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.conn.server_connect_failed()


class ListenFactory(ServerFactory):
    """The proxy's listening socket: every accepted client becomes a ``Connection``."""

    noisy = False

    def __init__(self, core: ProxyCore) -> None:
        self.core = core

    def buildProtocol(self, addr: object) -> ClientSide:
        return ClientSide(self.core)


class Connection:
    """A client connection, its upstream connection and the two links between them.

    Closing follows Toxiproxy: when a link's stream ends (its source closed, or a
    toxic ended it) its destination socket is closed after the data in front of the
    end-of-stream has left; that close is in turn the end of the other link's source.
    """

    def __init__(self, core: ProxyCore, client: ClientSide) -> None:
        self.core = core
        self.client = client
        self.server: ServerSide | None = None
        self.up: Link | None = None
        self.down: Link | None = None
        self.is_client_lost = False
        self.is_server_lost = False
        self.finished = False
        self.aborting = False  # stop() or reset_peer tore it down on purpose
        self.done: Deferred[None] = Deferred()
        self.id = core.register(self)
        # No reading until there is somewhere to send the bytes.
        _tcp(client).pauseProducing()
        host, port = core.upstream
        self.connector: IConnector = core.reactor.connectTCP(
            host, port, UpstreamFactory(self), timeout=core.connect_timeout
        )

    # ---- events from the sockets
    def server_connected(self, server: ServerSide) -> None:
        """The upstream socket is up: build both links and start reading the client."""
        self.server = server
        if self.is_client_lost:
            _tcp(server).loseConnection()
            return
        client_t, server_t = _tcp(self.client), _tcp(server)
        stats, clock, seed = self.core.stats, self.core.reactor, self.core.seed
        self.up = Link(self, "upstream", client_t, server_t, stats.upstream, clock=clock, seed=seed)
        self.down = Link(
            self, "downstream", server_t, client_t, stats.downstream, clock=clock, seed=seed
        )
        for toxic in self.core.toxics.values():
            self.add_toxic(toxic)
        server_t.registerProducer(self.up, True)
        client_t.registerProducer(self.down, True)
        client_t.resumeProducing()

    def server_connect_failed(self) -> None:
        """No upstream: close the client."""
        self.is_server_lost = True
        if not self.is_client_lost and not self.aborting:
            self.core.stats.upstream_connect_failures += 1
            # Like Toxiproxy: no upstream, so the client is simply closed.
            _tcp(self.client).loseConnection()
        self._maybe_finished()

    def client_data(self, data: bytes) -> None:
        """Bytes from the client go up."""
        if self.up is not None:
            self.up.push(data)

    def server_data(self, data: bytes) -> None:
        """Bytes from the server go down."""
        if self.down is not None:
            self.down.push(data)

    def client_lost(self) -> None:
        """The client socket closed: end the upstream link (or stop connecting)."""
        self.is_client_lost = True
        if self.down is not None:
            self.down.sink.gone = True
        if self.up is not None:
            self.up.end()
        elif self.server is None:
            self.connector.disconnect()  # still connecting: give up
        self._maybe_finished()

    def server_lost(self) -> None:
        """The upstream socket closed: end the downstream link."""
        self.is_server_lost = True
        if self.up is not None:
            self.up.sink.gone = True
        if self.down is not None:
            self.down.end()
        self._maybe_finished()

    def source_lost(self, link: Link) -> bool:
        """Is the socket ``link`` reads from gone?"""
        return self.is_client_lost if link is self.up else self.is_server_lost

    # ---- actions
    def add_toxic(self, toxic: Toxic) -> None:
        """Append ``toxic`` to its direction, if toxicity rolls it in for this connection."""
        link = self._link_for(toxic)
        if link is None:
            return  # links are built from the proxy's toxic list once connected
        link.add(toxic, self.core.decide(self.id, toxic))

    def remove_toxic(self, toxic: Toxic) -> None:
        """Take ``toxic`` out of its direction's chain."""
        link = self._link_for(toxic)
        if link is not None:
            link.remove(toxic.name)

    def _link_for(self, toxic: Toxic) -> Link | None:
        return self.up if toxic.stream == "upstream" else self.down

    def reset(self) -> None:
        """reset_peer: RST both sockets (Twisted's abortConnection sets SO_LINGER 0)."""
        if self.finished:
            return
        self.core.stats.resets += 1
        self.abort()

    def abort(self) -> None:
        """Drop both sockets now, without sending what is still buffered."""
        self.aborting = True
        for side, lost in ((self.client, self.is_client_lost), (self.server, self.is_server_lost)):
            if side is not None and side.transport is not None and not lost:
                _tcp(side).abortConnection()
        if self.server is None and not self.is_server_lost:
            self.connector.disconnect()

    def _maybe_finished(self) -> None:
        if self.finished or not (self.is_client_lost and self.is_server_lost):
            return
        self.finished = True
        for link in (self.up, self.down):
            if link is not None:
                link.cancel()
        self.core.unregister(self)
        self.done.callback(None)
