"""Upstream response heads are bounded in bytes and lines: over either is a 502 that says so."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionAborted
from twisted.python.failure import Failure

from server_core.config.settings import UpstreamSettings
from server_core.errors import UpstreamError
from server_core.upstream import UpstreamClient
from server_core.upstream._pool import UpstreamPool
from tests.unit.upstream.support import failure_of, memory_agent, result_of

LIMITS = UpstreamSettings(max_header_bytes=2000, max_headers=20)


def client_and_endpoints(settings: UpstreamSettings = LIMITS) -> tuple[UpstreamClient, Any]:
    from twisted.internet.testing import MemoryReactorClock

    pool = UpstreamPool(MemoryReactorClock(), settings)
    agent, endpoints, reactor = memory_agent(pool)
    return UpstreamClient(reactor, settings, agent=agent), endpoints


def post(client: UpstreamClient) -> defer.Deferred[Any]:
    return defer.ensureDeferred(
        client.post_json("http://upstream.test/v1/chat", {"q": 1}, upstream_name="model 'm'")
    )


def feed(endpoints: Any, chunks: list[bytes]) -> None:
    protocol, transport = endpoints.connections[-1]
    for chunk in chunks:
        if transport.disconnecting:
            break
        protocol.dataReceived(chunk)
    if transport.disconnecting:  # StringTransport only records the abort
        protocol.connectionLost(Failure(ConnectionAborted()))


def refused(d: defer.Deferred[Any]) -> UpstreamError:
    error = failure_of(d)
    assert isinstance(error, UpstreamError), error
    assert error.status == 502
    assert "response headers larger than 2000 bytes or more than 20 lines" in error.message
    assert "max_header_bytes" in error.message
    return error


@pytest.mark.parametrize("chunked", [False, True])
def test_endless_header_lines_are_a_502_before_the_header_timeout(chunked: bool) -> None:
    client, endpoints = client_and_endpoints()
    d = post(client)
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: a\r\n" * 1000
    feed(endpoints, [head[i : i + 7] for i in range(0, len(head), 7)] if chunked else [head])
    refused(d)
    assert endpoints.connections[-1][1].disconnecting


def test_few_but_long_header_lines_are_refused_on_bytes() -> None:
    client, endpoints = client_and_endpoints()
    d = post(client)
    feed(endpoints, [b"HTTP/1.1 200 OK\r\n" + (b"X-Pad: " + b"a" * 900 + b"\r\n") * 3])
    refused(d)


def test_interim_heads_count_toward_the_limit() -> None:
    client, endpoints = client_and_endpoints()
    d = post(client)
    feed(
        endpoints,
        [b"HTTP/1.1 100 Continue\r\n\r\n" * 3 + b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 30],
    )
    refused(d)


def test_a_head_within_the_limits_is_answered_and_its_body_is_not_counted() -> None:
    client, endpoints = client_and_endpoints()
    d = post(client)
    body = b"x" * 50_000  # far over the head limits, in the same read as the head
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 50000\r\n" + b"X-Pad: a\r\n" * 17 + b"\r\n"
    feed(endpoints, [head[:-1], head[-1:] + body])  # the blank line split across reads
    response = result_of(d)
    assert response.code == 200
    assert response.headers.getRawHeaders(b"x-pad") == [b"a"] * 17


def test_the_limits_apply_to_every_request_on_a_kept_connection() -> None:
    client, endpoints = client_and_endpoints()
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + b"X: y\r\n" * 15 + b"\r\n{}"
    first = post(client)
    feed(endpoints, [ok])
    response = result_of(first)
    response.deliverBody(_Discard())
    assert len(endpoints.connections) == 1
    second = post(client)
    assert len(endpoints.connections) == 1  # the same pooled connection
    feed(endpoints, [b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 25])
    refused(second)


class _Discard:
    def makeConnection(self, transport: Any) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        pass


def test_the_limits_are_read_from_the_configuration() -> None:
    from server_core.config.loader import parse_config

    config = parse_config(
        "server:\n  upstream:\n    max_header_bytes: 4096\n    max_headers: 7\n", file="<test>"
    )
    assert config.server.upstream.max_header_bytes == 4096
    assert config.server.upstream.max_headers == 7
    assert UpstreamSettings().max_header_bytes == 64 * 1024
    assert UpstreamSettings().max_headers == 100
