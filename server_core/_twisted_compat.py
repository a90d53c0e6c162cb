"""Every use of a Twisted private name in ``server_core``, each pinned by a test.

Twisted has no public way to ask these questions or make these adjustments, so the
answers read or set private attributes. Keeping them here means a Twisted upgrade
that renames one breaks ``tests/unit/test_twisted_compat.py``, not a request far
away; nothing else in ``server_core`` may touch a Twisted ``_name``.

Public names that only look private are not here: ``RequestTransmissionFailed``
and ``ResponseNeverReceived`` are exported by ``twisted.web.client``;
``RequestNotSent`` is not (it only lives there as an import), so it is.
"""

from __future__ import annotations

from collections.abc import Hashable

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.web import http
from twisted.web._newclient import HTTP11ClientProtocol, RequestNotSent
from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory

__all__ = [
    "EarlyAnswerChannel",
    "GenericHTTPChannelProtocol",
    "HTTP11ClientFactory",
    "HTTP11ClientProtocol",
    "RequestNotSent",
    "ReturnCheckingPool",
    "abort_body_transport",
    "channel_disconnected",
    "clear_exit_signal",
    "proxied_transport",
    "quiescent_callback",
    "raise_synchronously",
    "request_disconnected",
    "transport_aborting",
    "use_connection_factory",
    "waiting_for_port",
]

# -- client side (server_core.upstream) ----------------------------------------------

# ``RequestNotSent``: a pooled connection turned out to be closed before the request
# was written (twisted.web._newclient). The stale keep-alive retry keys on it.

HTTP11ClientFactory = _HTTP11ClientFactory
"""The factory ``HTTPConnectionPool`` builds per new connection:
``factory(quiescentCallback, metadata)``, building one ``HTTP11ClientProtocol``."""


def use_connection_factory(pool: HTTPConnectionPool, factory: type[_HTTP11ClientFactory]) -> None:
    """Make ``pool`` build its new connections with ``factory`` (``HTTPConnectionPool._factory``).

    The pool has no constructor argument for it; Twisted's own tests set it the same way.
    """
    pool._factory = factory


class ReturnCheckingPool(HTTPConnectionPool):
    """An ``HTTPConnectionPool`` that asks :meth:`reusable` before it keeps a connection.

    Twisted offers the connection back through the private ``_putConnection`` once
    its response has been read; a subclass decides here, in public, whether to keep it.
    """

    def reusable(self, connection: HTTP11ClientProtocol) -> bool:
        """Whether ``connection`` (its response fully read) may carry another request."""
        return True

    def _putConnection(self, key: Hashable, connection: HTTP11ClientProtocol) -> None:
        if self.reusable(connection):
            super()._putConnection(key, connection)


def transport_aborting(transport: object) -> bool:
    """Whether ``abortConnection()`` was called on this TCP transport.

    ``tcp.Connection._aborting`` turns True at once; ``disconnected`` only turns
    True a reactor turn later, when the connection is actually lost.
    """
    return bool(getattr(transport, "_aborting", False))


def proxied_transport(transport: object) -> object | None:
    """The connection a response body's transport stands for, None once the body ended.

    ``Response.deliverBody`` gives the body protocol a ``TransportProxyProducer``,
    which can pause, resume and stop but not abort; ``_producer`` is the TCP (or TLS)
    transport under it, which can.
    """
    return getattr(transport, "_producer", None)


def abort_body_transport(transport: object) -> None:
    """Abort the TCP connection under a response body (RST, frees the upstream slot).

    Here rather than in ``upstream`` because the relay (``sse.forwarded``), a lower
    layer, needs it too.
    """
    if transport is None:
        return
    real = proxied_transport(transport)
    abort = getattr(real, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.stopProducing()  # type: ignore[attr-defined]


# -- server side (server_core.web) -------------------------------------------------


def request_disconnected(request: http.Request) -> bool:
    """Whether the client's connection was lost under ``request``.

    ``Request._disconnected`` turns True in ``connectionLost`` and never back; unlike
    ``notifyFinish()`` it answers now.
    """
    return bool(request._disconnected)


def channel_disconnected(channel: http.HTTPChannel) -> bool:
    """Whether the connection under ``channel`` has been lost.

    ``HTTPChannel`` keeps no such flag (only ``Request._disconnected`` exists), so the
    answer comes from the transport: TCP's ``disconnected`` turns True before the
    channel's ``connectionLost`` runs; a TLS layer is looked through to the TCP one.
    """
    transport: object | None = channel.transport
    while transport is not None:
        if getattr(transport, "disconnected", False):
            return True
        transport = getattr(transport, "transport", None)
    return False


class GenericHTTPChannelProtocol(http._GenericHTTPChannelProtocol):
    """The wrapper ``HTTPFactory`` puts around each channel (HTTP/1.1, or h2 after ALPN).

    A site that builds its own channel class wraps it in this, as Twisted does.
    """


def clear_exit_signal(reactor: object) -> None:
    """Make twistd exit 0 after a signal-initiated shutdown.

    ``ReactorBase.sigTerm``/``sigInt`` record the signal in ``_exitSignal``; twistd
    re-raises it when the reactor stops, so the exit status reads "killed by SIGTERM".
    """
    if getattr(reactor, "_exitSignal", None) is not None:
        reactor._exitSignal = None  # type: ignore[attr-defined]


def waiting_for_port(service: StreamServerEndpointService) -> Deferred[IListeningPort] | None:
    """The Deferred of the port ``service`` listens on, None before it started listening.

    ``StreamServerEndpointService._waitingForPort`` is set by ``privilegedStartService``.
    """
    waiting: Deferred[IListeningPort] | None = service._waitingForPort
    return waiting


def raise_synchronously(service: StreamServerEndpointService) -> None:
    """Make ``service`` raise a listen failure from ``privilegedStartService`` itself.

    By default it only logs it, and the server runs on without a listening port.
    ``twisted.application.strports.service`` sets ``_raiseSynchronously`` the same way;
    the service resets it after its first start.
    """
    service._raiseSynchronously = True


class EarlyAnswerChannel(http.HTTPChannel):
    """An ``HTTPChannel`` whose own early refusals go through public, overridable hooks.

    Twisted answers a request it cannot parse (bad request line, header syntax or
    framing, too many headers) from the private ``_respondToBadRequestAndDisconnect``
    with a bare ``400`` and no body, and sends ``100 Continue`` from the private
    ``_send100Continue`` right after ``gotLength``, even when that request was refused.
    """

    def bad_request(self) -> None:
        """Answer a request Twisted could not parse, then close (default: Twisted's bare 400)."""
        super()._respondToBadRequestAndDisconnect()

    def continue_allowed(self) -> bool:
        """Whether the ``100 Continue`` Twisted is about to send may go out."""
        return True

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.bad_request()

    def _send100Continue(self) -> None:
        if self.continue_allowed():
            super()._send100Continue()


# ``HTTP11ClientProtocol`` (twisted.web._newclient): the protocol of one pooled upstream
# connection, subclassed by ``server_core.upstream._head_limit`` to bound response heads.


def quiescent_callback(factory: _HTTP11ClientFactory) -> object:
    """The callback ``factory`` hands each protocol it builds (``_quiescentCallback``).

    A factory that builds its own ``HTTP11ClientProtocol`` subclass must pass it on:
    it is how the pool takes a connection back once its response is read.
    """
    return factory._quiescentCallback
