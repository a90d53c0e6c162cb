#!/usr/bin/env python3
"""The cost floor of a Twisted relay: a TCP byte pass-through written with protocols only.

    python scripts/bench_floor.py --port 18850 --to 127.0.0.1:8080

Every accepted connection opens one connection to ``--to``; bytes go both ways unchanged
(no HTTP parsing, no pooling), each side's transport is the other's push producer (so a
slow reader pauses the fast writer), and a close on either side closes the other once
its pending bytes are written. What ``scripts/bench.py`` measures through it is what the
reactor, TCP and a Python ``dataReceived`` cost, below any HTTP server or client.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.internet import protocol


class _Half(protocol.Protocol):
    """One side of a relayed connection; ``peer`` is the other side, once it exists."""

    peer: _Half | None = None
    _pending: list[bytes]

    def __init__(self) -> None:
        self._pending = []

    def dataReceived(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self._pending.append(data)

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()
        self.peer = None


class _Backend(_Half):
    def connectionMade(self) -> None:
        front = self.factory.front  # type: ignore[attr-defined]
        if front.transport is None or front.disconnected:
            self.transport.loseConnection()
            return
        self.peer, front.peer = front, self
        self.transport.registerProducer(front.transport, True)
        front.transport.registerProducer(self.transport, True)
        for data in front._pending:
            self.transport.write(data)
        front._pending = []
        front.transport.resumeProducing()


class _BackendFactory(protocol.ClientFactory):
    protocol = _Backend

    def __init__(self, front: Front) -> None:
        self.front = front

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.front.transport.loseConnection()


class Front(_Half):
    """An accepted client connection: pauses until its backend connection is made."""

    disconnected = False

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        host, port = self.factory.target  # type: ignore[attr-defined]
        self.factory.reactor.connectTCP(host, port, _BackendFactory(self))  # type: ignore[attr-defined]

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        self.disconnected = True
        super().connectionLost(reason)


class RelayFactory(protocol.ServerFactory):
    """Accepts clients and relays each to ``target`` (host, port) on its own connection."""

    protocol = Front

    def __init__(self, reactor: Any, target: tuple[str, int]) -> None:
        self.reactor = reactor
        self.target = target


def main(argv: list[str] | None = None) -> int:
    from twisted.internet import reactor

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--to", required=True, help="host:port to relay to")
    args = parser.parse_args(argv)
    host, _, port = args.to.rpartition(":")
    listening = reactor.listenTCP(  # type: ignore[attr-defined]
        args.port, RelayFactory(reactor, (host, int(port))), backlog=1024, interface=args.interface
    )
    print(f"floor listening on {args.interface}:{listening.getHost().port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
