"""The fake's ``Site``: every HTTP connection is registered, so the server can close them.

``stop()`` must fire only once every connection is gone, and a crash or a failed
load must reset them all; Twisted's Site keeps no such list, so its channels
report to a ``Connections`` registry.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Site

__all__ = ["Connections", "TrackingSite"]


class Connections:
    """The open HTTP connections, each with a Deferred that fires when it is lost."""

    def __init__(self) -> None:
        self._open: dict[HTTPChannel, Deferred[None]] = {}

    def __len__(self) -> int:
        return len(self._open)

    def made(self, channel: HTTPChannel) -> None:
        """A connection was accepted."""
        self._open[channel] = Deferred()

    def lost(self, channel: HTTPChannel) -> None:
        """A connection is gone."""
        d = self._open.pop(channel, None)
        if d is not None:
            d.callback(None)

    def close_all(self, *, abort: bool) -> list[Deferred[None]]:
        """Close every connection (RST with ``abort``, else FIN); one Deferred each."""
        pending = []
        for channel, lost in list(self._open.items()):
            pending.append(lost)
            transport = cast(Any, channel.transport)
            if abort:
                transport.abortConnection()
            else:
                transport.loseConnection()
        return pending


class _Channel(HTTPChannel):
    """HTTPChannel that registers with its site's ``Connections``."""

    def connectionMade(self) -> None:
        super().connectionMade()
        try:
            # Token timing must not be distorted by Nagle + delayed ACK.
            cast(Any, self.transport).setTcpNoDelay(True)
        except Exception:  # noqa: S110 - not every transport is TCP
            pass
        cast(TrackingSite, self.factory).connections.made(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        try:
            super().connectionLost(reason)
        finally:
            cast(TrackingSite, self.factory).connections.lost(self)


class TrackingSite(Site):
    """A Site whose connections are listed in ``connections``; no access log."""

    protocol = _Channel  # type: ignore[assignment]

    def __init__(self, resource: IResource, connections: Connections, reactor: Any) -> None:
        super().__init__(resource, reactor=reactor)
        self.connections = connections

    def log(self, request: Any) -> None:
        """Access logging goes through the fake's own verbose log instead."""
