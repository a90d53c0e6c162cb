"""The upstream pool keeps only healthy connections; endpoints are kept and have Nagle off."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.web.client import URI

from server_core.upstream import UpstreamSettings, _pool, set_nodelay
from server_core.upstream._pool import NoDelayEndpointFactory, UpstreamPool
from tests.unit.upstream.support import memory_agent, response_with, result_of

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2"


def pool_and_agent() -> tuple[UpstreamPool, Any, Any]:
    pool = UpstreamPool(MemoryReactorClock(), UpstreamSettings(max_connections_per_host=3))
    agent, endpoints, _ = memory_agent(pool)
    return pool, agent, endpoints


def answer_twice(agent: Any, endpoints: Any, between: Any = None) -> int:
    """Two requests, each answered with a whole body; how many connections they used."""
    response_with(OK, agent, endpoints)
    if between is not None:
        between(endpoints.connections[-1][1])
    endpoints.last.dataReceived(b"ok")  # the body completes: the connection is offered back
    response_with(OK, agent, endpoints)
    return len(endpoints.connections)


def test_the_pool_is_persistent_sized_by_the_settings_and_never_retries_itself() -> None:
    pool, _, _ = pool_and_agent()
    assert pool.persistent and pool.maxPersistentPerHost == 3
    assert pool.retryAutomatically is False


def test_its_connections_are_built_by_a_quiet_factory() -> None:
    _, agent, endpoints = pool_and_agent()
    response_with(OK, agent, endpoints)
    [factory] = endpoints.factories
    assert factory.noisy is False


def test_a_healthy_connection_is_reused() -> None:
    _, agent, endpoints = pool_and_agent()
    assert answer_twice(agent, endpoints) == 1


@pytest.mark.parametrize(
    "going_away",
    [lambda t: t.loseConnection(), lambda t: t.abortConnection()],
    ids=["closing", "aborted"],
)
def test_a_connection_going_away_is_not_taken_back(going_away: Any) -> None:
    _, agent, endpoints = pool_and_agent()
    assert answer_twice(agent, endpoints, between=going_away) == 2


def test_an_aborting_connection_is_not_taken_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # TCP sets its abort flag at once and "disconnected" only a reactor turn later.
    monkeypatch.setattr(_pool, "transport_aborting", lambda transport: True)
    _, agent, endpoints = pool_and_agent()
    assert answer_twice(agent, endpoints) == 2


class _Socket:
    def __init__(self) -> None:
        self.nodelay: bool | None = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled


class _Layer:
    """A transport wrapped around another one, as TLS is around TCP."""

    def __init__(self, transport: object) -> None:
        self.transport = transport


def test_set_nodelay_reaches_the_socket_below_any_layer() -> None:
    socket = _Socket()
    set_nodelay(_Layer(_Layer(socket)))
    assert socket.nodelay is True
    set_nodelay(_Layer(None))  # nothing to set: no error


def test_endpoints_are_built_once_per_scheme_host_and_port() -> None:
    factory = NoDelayEndpointFactory(MemoryReactorClock(), connect_timeout=4.0)
    a = factory.endpointForURI(URI.fromBytes(b"http://127.0.0.1:8080/v1/chat"))
    b = factory.endpointForURI(URI.fromBytes(b"http://127.0.0.1:8080/v1/models"))
    c = factory.endpointForURI(URI.fromBytes(b"http://127.0.0.1:8081/v1/chat"))
    assert a is b and a is not c
    tls = factory.endpointForURI(URI.fromBytes(b"https://api.example/v1/chat"))
    assert tls is not factory.endpointForURI(URI.fromBytes(b"http://api.example:443/v1"))


def test_a_connected_protocol_has_nagle_off() -> None:
    socket = _Socket()

    class Inner:
        def connect(self, factory: IProtocolFactory) -> defer.Deferred[Protocol]:
            protocol = Protocol()
            protocol.transport = socket  # type: ignore[assignment]
            return defer.succeed(protocol)

    endpoint = _pool._NoDelayEndpoint(Inner())  # type: ignore[arg-type]
    result_of(endpoint.connect(None))  # type: ignore[arg-type]
    assert socket.nodelay is True
