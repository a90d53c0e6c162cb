"""GuardedSite over raw sockets: header deadline, body cap with and without Content-Length."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import defer, error
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.web import resource

from server_core.web import GuardedSite
from tests.integration.procs import reactor

pytestmark = pytest.mark.timeout(20)


class Echo(resource.Resource):
    isLeaf = True

    def render_POST(self, request: object) -> bytes:
        return b"got " + str(len(request.content.read())).encode()  # type: ignore[attr-defined]


class Raw(Protocol):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.received = b""
        self.closed: defer.Deferred[float] = defer.Deferred()
        self._wanted: list[tuple[bytes, defer.Deferred[None]]] = []

    def connectionMade(self) -> None:
        self.opened = reactor.seconds()
        for chunk in self.chunks:
            self.transport.write(chunk)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for wanted in [w for w in self._wanted if w[0] in self.received]:
            self._wanted.remove(wanted)
            wanted[1].callback(None)

    def when_received(self, marker: bytes) -> defer.Deferred[None]:
        """Fires once ``marker`` has arrived (at once if it already has)."""
        d: defer.Deferred[None] = defer.Deferred()
        if marker in self.received:
            d.callback(None)
        else:
            self._wanted.append((marker, d))
        return d

    def connectionLost(self, reason: object = None) -> None:
        self.reason = reason
        self.closed.callback(reactor.seconds() - self.opened)


async def exchange(
    site: GuardedSite, chunks: list[bytes], proto: Raw | None = None
) -> tuple[bytes, float]:
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    proto = proto or Raw(chunks)
    try:
        reactor.connectTCP(
            "127.0.0.1", port.getHost().port, ClientFactory.forProtocol(lambda: proto)
        )
        elapsed = await proto.closed
        return proto.received, elapsed
    finally:
        await port.stopListening()


def site(**kw: object) -> GuardedSite:
    options = {"max_body_bytes": 1000, "header_timeout": 0.3, **kw}
    return GuardedSite(Echo(), reactor=reactor, **options)  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_slow_headers_are_cut_at_the_deadline() -> None:
    received, elapsed = await exchange(site(), [b"POST / HTTP/1.1\r\nHost: x\r\n"])
    assert received == b""
    assert 0.25 <= elapsed < 3


@pytest_twisted.ensureDeferred
async def test_an_idle_keepalive_connection_is_closed_cleanly_at_the_deadline() -> None:
    # Idle between requests is no attack: a FIN the client can tell from a failure.
    proto = Raw([b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"])
    received, elapsed = await exchange(site(), [], proto)
    assert received.startswith(b"HTTP/1.1 200") and received.endswith(b"got 2")
    assert 0.25 <= elapsed < 3
    assert isinstance(proto.reason.value, error.ConnectionDone), proto.reason  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_a_request_left_half_sent_is_reset_at_the_deadline() -> None:
    proto = Raw([b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", b"POST / HT"])
    received, _ = await exchange(site(), [], proto)
    assert received.endswith(b"got 2")
    assert not isinstance(proto.reason.value, error.ConnectionDone), proto.reason  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_content_length_over_the_cap_is_413_before_the_body() -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
    received, _ = await exchange(site(), [head])
    status, _, body = received.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["error"]["code"] == "request_too_large"


@pytest_twisted.ensureDeferred
async def test_chunked_body_over_the_cap_is_413() -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"200\r\n" + b"x" * 0x200 + b"\r\n"
    received, _ = await exchange(site(), [head, chunk, chunk, chunk, b"0\r\n\r\n"])
    assert received.startswith(b"HTTP/1.1 413")


@pytest_twisted.ensureDeferred
async def test_body_within_the_cap_is_served() -> None:
    body = b"y" * 900
    head = b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 900\r\n\r\n"
    received, _ = await exchange(site(), [head + body])
    assert received.startswith(b"HTTP/1.1 200") and received.endswith(b"got 900")


def chat_request(body: dict[str, object], fault: str = "") -> bytes:
    payload = json.dumps(body).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n"
        + (b"X-Fault: " + fault.encode() + b"\r\n" if fault else b"")
        + b"Content-Length: "
        + str(len(payload)).encode()
        + b"\r\n\r\n"
        + payload
    )


async def raw_to_stack(port: int, chunks: list[bytes]) -> tuple[bytes, float]:
    proto = Raw(chunks)
    reactor.connectTCP("127.0.0.1", port, ClientFactory.forProtocol(lambda: proto))
    elapsed = await proto.closed
    return proto.received, elapsed


@pytest_twisted.ensureDeferred
async def test_a_pipelined_stream_is_not_cut_by_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import server_core.service as service_module
    from tests.integration.stack import stack

    monkeypatch.setattr(service_module, "HEADER_TIMEOUT", 0.5)
    async with stack() as s:
        first = chat_request({"model": "fake", "messages": [{"role": "user", "content": "a"}],
                              "max_tokens": 2})  # fmt: skip
        second = chat_request(
            {"model": "fake", "messages": [{"role": "user", "content": "b"}], "stream": True,
             "max_tokens": 15, "ignore_eos": True},
            "token_delay=100ms",
        )  # fmt: skip
        # The stream lasts 1.5 s, three deadlines; the client closes after it (keep-alive
        # would otherwise hold the connection until the idle deadline).
        proto = Raw([first + second])
        reactor.connectTCP("127.0.0.1", s.port, ClientFactory.forProtocol(lambda: proto))
        # Either the stream completes or the connection ends first (which the assert names).
        await defer.DeferredList(
            [proto.when_received(b"data: [DONE]"), proto.closed],
            fireOnOneCallback=True,
        )
        assert b"data: [DONE]" in proto.received
        if not proto.closed.called:
            proto.transport.loseConnection()  # type: ignore[union-attr]
            await proto.closed


@pytest_twisted.ensureDeferred
async def test_a_body_that_never_completes_is_cut_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import server_core.service as service_module
    from tests.integration.stack import stack

    monkeypatch.setattr(service_module, "HEADER_TIMEOUT", 0.3)
    async with stack() as s:
        head = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        received, elapsed = await raw_to_stack(s.port, [head])
        assert received == b"" and elapsed < 2


@pytest_twisted.ensureDeferred
async def test_undecodable_url_is_json_and_no_version_banner() -> None:
    from tests.integration.stack import stack

    async with stack() as s:
        received, _ = await raw_to_stack(
            s.port, [b"GET /v1/models/%ff HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"]
        )
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400")
        assert json.loads(body)["error"]["type"] == "invalid_request_error"
        assert b"twisted" not in head.lower()
        received, _ = await raw_to_stack(
            s.port, [b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"]
        )
        head = received.partition(b"\r\n\r\n")[0].lower()
        assert b"server: server-core" in head and b"twisted" not in head


class Args(resource.Resource):
    """Shows what Twisted made of the request before any route ran."""

    isLeaf = True

    def render_POST(self, request: object) -> bytes:
        args = sorted(request.args)  # type: ignore[attr-defined]
        left = len(request.content.read())  # type: ignore[attr-defined]
        return json.dumps({"args": [a.decode() for a in args], "body": left}).encode()


@pytest_twisted.ensureDeferred
async def test_form_bodies_are_not_parsed_before_routing_but_the_query_is() -> None:
    body = b"a=1&b=2"
    for ctype in (b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=zz"):
        head = (
            b"POST /x?follow=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: "
            + ctype
            + b"\r\nContent-Length: 7\r\n\r\n"
        )
        guarded = GuardedSite(Args(), max_body_bytes=1000, header_timeout=5, reactor=reactor)
        received, _ = await exchange(guarded, [head + body])
        assert received.startswith(b"HTTP/1.1 200"), received
        assert json.loads(received.partition(b"\r\n\r\n")[2]) == {"args": ["follow"], "body": 7}


def routes_site() -> GuardedSite:
    from server_core.testing import StubRouter
    from server_core.web import OpenAIRoutes

    routes = OpenAIRoutes(StubRouter(reactor), clock=reactor)
    return GuardedSite(routes.resource(), max_body_bytes=1000, header_timeout=5, reactor=reactor)


def dechunked(body: bytes) -> bytes:
    """A chunked body's payload (enough for the whole bodies these tests read)."""
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out, body = out + rest[:n], rest[n + 2 :]
    return out


def json_answer(received: bytes) -> tuple[int, dict[str, object]]:
    """The status and the OpenAI error object of a whole raw response."""
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), received
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunked(body)
    error = json.loads(body)["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert {"message", "type", "code", "param"} <= set(error)
    return int(head.split()[1]), error


CLOSE = b"Host: x\r\nConnection: close\r\n"
EARLY = [
    (b"GET /v1//models HTTP/1.1\r\n" + CLOSE + b"\r\n", 404),
    (b"POST /v1//chat/completions HTTP/1.1\r\n" + CLOSE + b"Content-Length: 2\r\n\r\n{}", 404),
    (b"GET /logs//x HTTP/1.1\r\n" + CLOSE + b"\r\n", 404),
    (b"GET /v1/models/\xff HTTP/1.1\r\n" + CLOSE + b"\r\n", 400),
    (b"GET * HTTP/1.1\r\n" + CLOSE + b"\r\n", 400),
    (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n" + CLOSE + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + CLOSE + b"X-A: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + CLOSE + b"X-A: b\r\n" * 600 + b"\r\n", 400),
    (b"GARBAGE\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\n" + CLOSE + b"Content-Length: zz\r\n\r\n", 400),
    (
        b"POST /v1/completions HTTP/1.1\r\n" + CLOSE + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
    ),
    (b"GET /v1/models HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
    (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: close\r\n\r\n", 400),
    (
        b"POST /v1/chat/completions HTTP/1.1\r\n"
        + CLOSE
        + b"Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: 5\r\n\r\nhello",
        400,
    ),
]


@pytest.mark.parametrize(("raw", "status"), EARLY, ids=[str(i) for i in range(len(EARLY))])
@pytest_twisted.ensureDeferred
async def test_every_early_answer_has_a_status_and_an_openai_body(raw: bytes, status: int) -> None:
    received, _ = await exchange(routes_site(), [raw])
    assert json_answer(received)[0] == status


@pytest_twisted.ensureDeferred
async def test_no_100_continue_follows_a_413() -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
    received, _ = await exchange(site(), [head])
    assert b"100 Continue" not in received
    assert json_answer(received)[0] == 413
