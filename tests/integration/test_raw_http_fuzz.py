"""Hypothesis fuzz of raw HTTP requests against server_core's whole HTTP stack, in memory.

The site (``GuardedSite`` around the browser guard and the OpenAI and admin routes, as
``make_service`` composes them, a ``StubRouter`` behind them) runs on a ``Clock`` and an
in-memory transport: each example writes raw bytes (request line, headers, body, content
type drawn, framing honest or not) and reads what comes back. Whatever the bytes: no 5xx,
every answer has a status line and a JSON body, and nothing is logged as a failure or at
CRITICAL level (a traceback).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from zope.interface import implementer

from server_core.config.loader import parse_config
from server_core.service import guarded_resource
from server_core.testing import StubRouter
from server_core.web import GuardedSite, OpenAIRoutes

pytestmark = pytest.mark.timeout(120)

KEY = "sk-fuzz"
LISTEN = "tcp:1135:interface=127.0.0.1"
PATHS = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/v1/models/known",
    "/v1/models/%ff",
    "/health",
    "/running",
    "/unload",
    "/logs/x",
    "/logs//x",
    "/v1//models",
    "/v1//chat/completions",
    "/",
    "*",
    "/nowhere",
    "/v1/models/",
    "/v1/chat/completions?stream=1&x=%00",
]
CONTENT_TYPES = [
    b"application/json",
    b"application/json; charset=utf-8",
    b"text/plain",
    b"application/x-www-form-urlencoded",
    b"multipart/form-data; boundary=zz",
    b"multipart/form-data",
    b"",
    b"\xff\xfe",
]
GOOD = {"model": "known", "messages": [{"role": "user", "content": "hi"}]}

bodies = st.one_of(
    st.just(json.dumps(GOOD).encode()),
    st.just(json.dumps(GOOD).encode()),
    st.just(json.dumps({**GOOD, "stream": True}).encode()),
    st.just(json.dumps({"model": "known", "prompt": "x", "input": "y"}).encode()),
    st.just(b"a=1&b=2"),
    st.just(b'--zz\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--zz--\r\n'),
    st.just(b"[" * 5000),
    st.just(b"[]," * 2000),
    st.just(b"\xff\xfe\x00"),
    st.just(b'{"model": "known", "messages": "\\ud800"}'),
    st.binary(max_size=64),
    st.text(max_size=40).map(str.encode),
)
header_names = st.sampled_from(
    [b"X-A", b"Accept", b"Expect", b"Origin", b"Connection", b"Content-Encoding", b"Bad Name"]
) | st.binary(min_size=1, max_size=8)
header_values = st.sampled_from([b"1", b"100-continue", b"close", b"gzip", b"x" * 20000]) | (
    st.binary(max_size=12)
)


def rarely(common: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``common`` seven times in eight, ``odd`` otherwise: most requests reach a route."""
    return st.integers(0, 7).flatmap(lambda n: odd if n == 0 else common)


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    """One request's bytes, well framed most of the time, broken some of the time."""
    method = draw(
        rarely(st.sampled_from([b"GET", b"POST"]), st.sampled_from([b"PUT", b"OPTIONS", b"G\x00T"]))
    )
    path = draw(rarely(st.sampled_from(PATHS).map(str.encode), st.binary(max_size=20)))
    version = draw(rarely(st.just(b"HTTP/1.1"), st.sampled_from([b"HTTP/1.0", b"HTTP/9.9", b""])))
    body = draw(bodies)
    lines = [method + b" " + path + b" " + version]
    others = st.sampled_from([b"localhost", b"fuzz.test", b"evil.test", b"[::1]:1135", b""])
    host = draw(rarely(st.just(b"127.0.0.1:1135"), others))
    lines += [b"Host: " + host] * draw(rarely(st.just(1), st.sampled_from([0, 2])))
    if draw(st.integers(0, 3)) == 0:
        origin = draw(st.sampled_from([b"http://ok.test", b"http://evil.test", b"null"]))
        lines.append(b"Origin: " + origin)
    if draw(st.booleans()):
        lines.append(b"Authorization: Bearer " + KEY.encode())
    ctype = draw(rarely(st.just(b"application/json"), st.sampled_from(CONTENT_TYPES)))
    if ctype:
        lines.append(b"Content-Type: " + ctype)
    extra = rarely(
        st.lists(st.tuples(header_names, header_values), min_size=1, max_size=3), st.just([])
    )
    lines += [n + b": " + v for n, v in draw(rarely(st.just([]), extra))]
    framing = draw(rarely(st.just("length"), st.sampled_from(["chunked", "wrong-length", "none"])))
    if framing == "length":
        lines.append(b"Content-Length: %d" % len(body))
    elif framing == "wrong-length":
        lines.append(
            b"Content-Length: " + draw(st.sampled_from([b"-1", b"zz", b"1, 2", b"99999999999"]))
        )
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    else:
        body = b""
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def responses(raw: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """(status, head, body) of every response in ``raw`` (chunked bodies decoded)."""
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, f"no end of head in {raw[:200]!r}"
        status_line = head.split(b"\r\n", 1)[0]
        assert status_line.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), status_line
        status = int(status_line.split()[1])
        fields = dict(
            (k.strip().lower(), v.strip())
            for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
        )
        if b"chunked" in fields.get(b"transfer-encoding", b""):
            body = b""
            while True:
                size, _, rest = rest.partition(b"\r\n")
                n = int(size, 16)
                body, rest = body + rest[:n], rest[n + 2 :]
                if n == 0:
                    break
        elif b"content-length" in fields:
            n = int(fields[b"content-length"])
            body, rest = rest[:n], rest[n:]
        else:  # closed-delimited (HTTP/1.0)
            body, rest = rest, b""
        yield status, head, body
        raw = rest


class Server:
    """The whole HTTP stack of server_core on a Clock, one in-memory connection per call."""

    def __init__(self, api_keys: tuple[str, ...]) -> None:
        self.clock = Clock()
        routes = OpenAIRoutes(StubRouter(self.clock), clock=self.clock, api_keys=api_keys)
        # The browser guard (Host, Origin, Content-Type) as make_service composes it.
        config = parse_config(
            "server:\n  cors_origins: [http://ok.test]\n  allowed_hosts: [fuzz.test]\n",
            file="<fuzz>",
        )
        resource = guarded_resource(config, LISTEN, routes.resource())
        self.site = GuardedSite(
            resource, max_body_bytes=8192, header_timeout=5.0, reactor=self.clock
        )

    def exchange(self, raw: bytes) -> bytes:
        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(raw)
        for _ in range(3):  # any deadline or keep-alive timer the request armed
            self.clock.advance(6.0)
        protocol.connectionLost(None)
        return transport.value()


SERVERS = {keys: Server(keys) for keys in ((), (KEY,))}


@pytest.fixture
def failures() -> Iterator[list[dict[str, Any]]]:
    """Every event logged as a failure or at CRITICAL/ERROR level while the test runs."""
    seen: list[dict[str, Any]] = []

    @implementer(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        level = event.get("log_level")
        if "log_failure" in event or level in (LogLevel.critical, LogLevel.error):
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield seen
    finally:
        globalLogPublisher.removeObserver(observe)


@settings(
    derandomize=True,
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=raw_requests(), with_key=st.booleans())
def test_any_raw_request_gets_a_status_and_a_json_body_and_no_traceback(
    raw: bytes, with_key: bool, failures: list[dict[str, Any]]
) -> None:
    server = SERVERS[(KEY,) if with_key else ()]
    received = server.exchange(raw)
    answers = list(responses(received))
    if not answers:
        # Only a request that never completed may go unanswered (the header deadline).
        assert b"\r\n\r\n" not in raw or b"Content-Length: 99999999999" in raw, raw[:300]
    for status, head, body in answers:
        assert status < 500, (raw[:300], head, body[:300])
        if status in (100, 204, 304) or raw.startswith(b"HEAD "):
            continue
        payload = json.loads(body)
        assert isinstance(payload, dict), body[:300]
        if status >= 400:
            error = payload["error"]
            assert {"message", "type", "code", "param"} <= set(error), payload
    assert not failures, [event.get("log_format") for event in failures]
