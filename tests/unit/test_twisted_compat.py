"""Pins the Twisted private names ``server_core._twisted_compat`` relies on, and their meaning.

Each test fails if Twisted renames or changes what the compat function reads or sets.
"""

from __future__ import annotations

import inspect
import signal
from typing import Any

import pytest
import pytest_twisted
import twisted.application.app
import twisted.web.client
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer, reactor
from twisted.internet.abstract import FileDescriptor
from twisted.internet.base import ReactorBase
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.client import HTTPConnectionPool, Request
from twisted.web.http import HTTPChannel
from twisted.web.http import Request as ServerRequest
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from server_core._twisted_compat import (
    EarlyAnswerChannel,
    GenericHTTPChannelProtocol,
    HTTP11ClientFactory,
    HTTP11ClientProtocol,
    RequestNotSent,
    ReturnCheckingPool,
    channel_disconnected,
    clear_exit_signal,
    proxied_transport,
    quiescent_callback,
    raise_synchronously,
    request_disconnected,
    transport_aborting,
    use_connection_factory,
    waiting_for_port,
)
from tests.unit.upstream.support import (
    MemoryEndpoints,
    failure_of,
    memory_agent,
    response_with,
    result_of,
)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2"

# -- client side -----------------------------------------------------------------------


def test_request_not_sent_is_what_a_closed_connection_answers() -> None:
    pool = HTTPConnectionPool(MemoryReactorClock())
    connection = result_of(pool.getConnection("key", MemoryEndpoints()))
    connection.connectionLost(Failure(ConnectionDone()))
    d = connection.request(Request(b"GET", b"/", Headers(), None))
    assert isinstance(failure_of(d), RequestNotSent)


def test_the_other_request_failures_are_public() -> None:
    exported = twisted.web.client.__all__
    assert "RequestTransmissionFailed" in exported and "ResponseNeverReceived" in exported


def test_a_pool_builds_its_connections_with_the_factory_it_is_given() -> None:
    class Marked(HTTP11ClientFactory):
        pass

    plain, marked = HTTPConnectionPool(MemoryReactorClock()), HTTPConnectionPool(MemoryReactor())
    use_connection_factory(marked, Marked)
    for pool, kind in ((plain, HTTP11ClientFactory), (marked, Marked)):
        endpoints = MemoryEndpoints()
        result_of(pool.getConnection("key", endpoints))
        [factory] = endpoints.factories
        assert type(factory) is kind


class _Choosy(ReturnCheckingPool):
    def __init__(self, keep: bool) -> None:
        super().__init__(MemoryReactorClock())
        self.keep = keep
        self.offered: list[Any] = []

    def reusable(self, connection: Any) -> bool:
        self.offered.append((connection, connection.state))
        return self.keep


@pytest.mark.parametrize(("keep", "connections"), [(True, 1), (False, 2)])
def test_a_finished_connection_is_offered_to_reusable(keep: bool, connections: int) -> None:
    pool = _Choosy(keep)
    agent, endpoints, _ = memory_agent(pool)
    response_with(OK, agent, endpoints)
    endpoints.last.dataReceived(b"ok")
    assert pool.offered == [(endpoints.last, "QUIESCENT")]
    response_with(OK, agent, endpoints)
    assert len(endpoints.connections) == connections


@pytest_twisted.ensureDeferred
async def test_an_aborted_tcp_connection_is_aborting_before_it_is_disconnected() -> None:
    lost: defer.Deferred[None] = defer.Deferred()

    class Client(Protocol):
        def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
            lost.callback(None)

    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(Protocol)
    )
    try:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        client: Any = await endpoint.connect(Factory.forProtocol(Client))
        transport = client.transport
        assert not transport_aborting(transport)
        transport.abortConnection()
        assert transport_aborting(transport) and not transport.disconnected
        await lost
        assert transport.disconnected
    finally:
        await port.stopListening()


def test_a_body_transport_proxies_the_connection_until_the_body_ended() -> None:
    agent, endpoints, _ = memory_agent()
    response = response_with(OK, agent, endpoints)
    body = Protocol()
    response.deliverBody(body)
    assert proxied_transport(body.transport) is endpoints.connections[-1][1]
    endpoints.last.dataReceived(b"ok")
    assert proxied_transport(body.transport) is None


# -- server side -----------------------------------------------------------------------


def _held_requests(channel: HTTPChannel) -> list[ServerRequest]:
    """Make ``channel`` keep each request it parses, unfinished, in the returned list."""
    seen: list[ServerRequest] = []

    class Held(ServerRequest):
        def process(self) -> None:
            seen.append(self)

    channel.requestFactory = Held
    return seen


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def test_request_disconnected_turns_true_when_the_connection_is_lost() -> None:
    channel = HTTPChannel()
    held = _held_requests(channel)
    channel.makeConnection(StringTransport())
    channel.dataReceived(GET)
    [request] = held
    assert request_disconnected(request) is False
    channel.connectionLost(Failure(ConnectionDone()))
    assert request_disconnected(request) is True


class _Socket(FileDescriptor):
    """A TCP-like transport: ``FileDescriptor`` keeps the public ``disconnected`` flag."""

    def __init__(self) -> None:
        super().__init__(reactor=MemoryReactor())
        self.connected = 1


@pytest.mark.parametrize("layered", [False, True], ids=["tcp", "below-a-wrapper"])
def test_channel_disconnected_turns_true_when_the_socket_is_lost(layered: bool) -> None:
    socket, channel = _Socket(), HTTPChannel()
    if layered:  # TLS is a ProtocolWrapper between the socket and the channel
        ProtocolWrapper(WrappingFactory(Factory()), channel).makeConnection(socket)
    else:
        channel.makeConnection(socket)
    assert channel_disconnected(channel) is False
    socket.connectionLost(Failure(ConnectionDone()))
    assert channel_disconnected(channel) is True


def test_the_generic_channel_wrapper_is_what_a_site_builds_and_it_serves_a_channel() -> None:
    site = server.Site(Resource())
    assert type(site.buildProtocol(None)) in GenericHTTPChannelProtocol.__mro__
    channel = HTTPChannel()
    held = _held_requests(channel)
    wrapper = GenericHTTPChannelProtocol(channel)
    wrapper.factory = site
    wrapper.makeConnection(StringTransport())
    wrapper.dataReceived(GET)
    assert channel.factory is site and len(held) == 1


def test_clear_exit_signal_forgets_the_signal_the_reactor_recorded() -> None:
    class Recording:
        _exitSignal = ReactorBase._exitSignal

        def callFromThread(self, f: Any, *a: Any) -> None:
            pass

        def stop(self) -> None:
            pass

    fake = Recording()
    ReactorBase.sigTerm(fake, signal.SIGTERM)  # type: ignore[arg-type]
    assert fake._exitSignal == signal.SIGTERM
    clear_exit_signal(fake)
    assert fake._exitSignal is None
    clear_exit_signal(object())  # a reactor without the attribute: nothing to do
    # twistd is what reads it, to exit "killed by" that signal.
    assert "reactor._exitSignal" in inspect.getsource(twisted.application.app)


class _Endpoint:
    def __init__(self, result: defer.Deferred[Any]) -> None:
        self.result = result

    def listen(self, factory: Any) -> defer.Deferred[Any]:
        return self.result


def test_waiting_for_port_is_the_listen_deferred_once_started() -> None:
    listening: defer.Deferred[Any] = defer.Deferred()
    service = StreamServerEndpointService(_Endpoint(listening), Factory())
    assert waiting_for_port(service) is None
    service.privilegedStartService()
    waiting = waiting_for_port(service)
    assert waiting is not None and not waiting.called
    port = object()
    listening.callback(port)
    assert result_of(waiting) is port


def test_raise_synchronously_makes_a_listen_failure_raise_from_the_start() -> None:
    def failing() -> StreamServerEndpointService:
        error = CannotListenError("127.0.0.1", 1, OSError("in use"))
        return StreamServerEndpointService(_Endpoint(defer.fail(error)), Factory())

    quiet = failing()
    quiet.privilegedStartService()  # only logged
    loud = failing()
    raise_synchronously(loud)
    with pytest.raises(CannotListenError):
        loud.privilegedStartService()


class _Hooked(EarlyAnswerChannel):
    """Records which early-answer hook Twisted's parser called."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.allow = True

    def bad_request(self) -> None:
        self.calls.append("bad_request")
        super().bad_request()

    def continue_allowed(self) -> bool:
        self.calls.append("continue_allowed")
        return self.allow


def _hooked_channel() -> tuple[_Hooked, StringTransport]:
    channel = _Hooked()
    channel.requestFactory = ServerRequest  # type: ignore[assignment]
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def test_twisted_refuses_unparseable_requests_through_the_bad_request_hook() -> None:
    # Pins HTTPChannel._respondToBadRequestAndDisconnect as the one bare-400 path.
    channel, transport = _hooked_channel()
    channel.dataReceived(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
    assert channel.calls == ["bad_request"]
    assert transport.value() == b"HTTP/1.1 400 Bad Request\r\n\r\n"  # Twisted's default


def test_twisted_asks_before_sending_100_continue() -> None:
    # Pins HTTPChannel._send100Continue, called after gotLength for Expect: 100-continue.
    head = b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    channel, transport = _hooked_channel()
    channel.dataReceived(head)
    assert channel.calls == ["continue_allowed"]
    assert transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    refusing, transport = _hooked_channel()
    refusing.allow = False
    refusing.dataReceived(head)
    assert transport.value() == b""


def test_quiescent_callback_is_what_the_factory_gives_its_protocols() -> None:
    # Pins _HTTP11ClientFactory._quiescentCallback and HTTP11ClientProtocol's argument.
    def callback(protocol: object) -> None:
        pass

    factory = HTTP11ClientFactory(callback, None)
    assert quiescent_callback(factory) is callback
    built = factory.buildProtocol(None)
    assert isinstance(built, HTTP11ClientProtocol)
    assert built._quiescentCallback is callback
