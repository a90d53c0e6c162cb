"""The connection side of ``UpstreamClient``: its pool and its endpoints.

Four adjustments to what ``Agent`` does by default: the pool never takes back a
connection that is going away, its connections do not log their opening and
closing nor accept an unbounded response head (``_head_limit``), and every TCP
connection has Nagle off.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.web.client import URI
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from server_core._twisted_compat import (
    ReturnCheckingPool,
    transport_aborting,
    use_connection_factory,
)
from server_core.config.settings import UpstreamSettings
from server_core.upstream._head_limit import head_limited_factory

__all__ = ["NoDelayEndpointFactory", "UpstreamPool", "set_nodelay"]

_MAX_CACHED_ENDPOINTS = 1024


def set_nodelay(transport: object) -> None:
    """Disable Nagle on the TCP connection under ``transport`` (also below TLS)."""
    while transport is not None:
        setter = getattr(transport, "setTcpNoDelay", None)
        if setter is not None:
            setter(True)
            return
        transport = getattr(transport, "transport", None)


class UpstreamPool(ReturnCheckingPool):
    """A persistent pool that never takes back a connection that is already going away.

    When a relay aborts the upstream socket (error event, client gone) in the same
    read that completes the body, Twisted would otherwise pool the aborting
    connection and send the next request into it (found by the chaos runner).
    """

    def __init__(self, reactor: object, settings: UpstreamSettings) -> None:
        super().__init__(reactor, persistent=True)
        # Quiet (no log line per connection) and with a bound on each response head.
        use_connection_factory(
            self, head_limited_factory(settings.max_header_bytes, settings.max_headers)
        )
        self.maxPersistentPerHost = settings.max_connections_per_host
        # The client retries itself, and only when the request provably never left.
        self.retryAutomatically = False

    def reusable(self, connection: object) -> bool:
        """Only a connection whose transport is not aborting or closing is kept."""
        transport = getattr(connection, "transport", None)
        return not (
            transport is None
            or transport_aborting(transport)
            or getattr(transport, "disconnecting", False)
            or getattr(transport, "disconnected", False)
        )


@implementer(IStreamClientEndpoint)
class _NoDelayEndpoint:
    """An endpoint whose connections have Nagle off."""

    def __init__(self, inner: IStreamClientEndpoint) -> None:
        self._inner = inner

    def connect(self, factory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        """Connect like the inner endpoint, then turn Nagle off on the new connection."""

        def nodelay(protocol: IProtocol) -> IProtocol:
            set_nodelay(getattr(protocol, "transport", None))
            return protocol

        return self._inner.connect(factory).addCallback(nodelay)


@implementer(IAgentEndpointFactory)
class NoDelayEndpointFactory:
    """Plain/TLS endpoints like Agent's own, with Nagle off (small requests leave at once)."""

    def __init__(self, reactor: object, connect_timeout: float) -> None:
        self._reactor = reactor
        self._timeout = connect_timeout
        self._endpoints: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """The endpoint for ``uri``'s scheme, host and port, built once and kept."""
        # Agent asks for an endpoint on every request, even when the pool has a
        # connection; building one costs an IDNA round trip, so keep them.
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._build(uri)
            if len(self._endpoints) < _MAX_CACHED_ENDPOINTS:
                self._endpoints[key] = endpoint
        return endpoint

    def _build(self, uri: URI) -> IStreamClientEndpoint:
        host = uri.host.decode("idna") if isinstance(uri.host, bytes) else uri.host
        tcp = HostnameEndpoint(self._reactor, host, uri.port, timeout=self._timeout)
        if uri.scheme == b"https":
            from twisted.internet.ssl import optionsForClientTLS

            return _NoDelayEndpoint(wrapClientTLS(optionsForClientTLS(host), tcp))
        return _NoDelayEndpoint(tcp)
