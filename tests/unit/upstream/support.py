"""In-memory upstream connections for the upstream tests: a real Agent, no sockets.

``MemoryEndpoints`` hands Agent an endpoint whose connections are ``StringTransport``
objects; a test plays the upstream by feeding response bytes to the protocol.
"""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, HTTPConnectionPool
from twisted.web.iweb import IAgentEndpointFactory, IResponse
from zope.interface import implementer

T = TypeVar("T")


@implementer(IStreamClientEndpoint, IAgentEndpointFactory)
class MemoryEndpoints:
    """Every URI's endpoint: each connect makes one protocol on a fresh StringTransport."""

    def __init__(self) -> None:
        self.connections: list[tuple[Any, StringTransport]] = []
        self.factories: list[IProtocolFactory] = []

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        return self

    def connect(self, factory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        self.factories.append(factory)
        protocol = factory.buildProtocol(None)  # type: ignore[arg-type]
        assert protocol is not None
        transport = StringTransport(lenient=True)  # like TCP: a closing socket may resume
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return defer.succeed(protocol)

    @property
    def last(self) -> Any:
        """The protocol of the newest connection (an HTTP11ClientProtocol)."""
        return self.connections[-1][0]


def memory_agent(
    pool: HTTPConnectionPool | None = None,
) -> tuple[Agent, MemoryEndpoints, MemoryReactorClock]:
    """A real Agent on in-memory connections and a clock."""
    reactor = MemoryReactorClock()
    endpoints = MemoryEndpoints()
    pool = pool if pool is not None else HTTPConnectionPool(reactor, persistent=True)
    return Agent.usingEndpointFactory(reactor, endpoints, pool), endpoints, reactor


def response_with(head: bytes, agent: Agent, endpoints: MemoryEndpoints) -> IResponse:
    """Send a GET through ``agent`` and answer it with the status line and headers ``head``."""
    d = agent.request(b"GET", b"http://upstream.test/x")
    endpoints.last.dataReceived(head + b"\r\n\r\n")
    return result_of(d)


def close_cleanly(endpoints: MemoryEndpoints) -> None:
    """The upstream closes the newest connection with a FIN."""
    endpoints.last.connectionLost(Failure(ConnectionDone()))


def result_of(d: defer.Deferred[T]) -> T:
    """The result a Deferred already has; fails the test if it has none or failed."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    result: T = box[0]
    return result


def failure_of(d: defer.Deferred[Any]) -> BaseException:
    """The exception a Deferred already failed with."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    assert isinstance(box[0], Failure), f"expected a failure, got {box[0]!r}"
    error = box[0].value
    assert error is not None
    return error
