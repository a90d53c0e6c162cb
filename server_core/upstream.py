"""HTTP client side: Twisted's Agent with its own pool, timeouts and cancellation.

Agent is the layer treq wraps. A proxy wants it bare: treq follows redirects, keeps
one cookie jar shared by every client's requests, asks for gzip and decodes it, and
re-parses the URL (with IDNA) on every request, which cost about half a millisecond
of CPU per request here.

Timeouts: connect (TCP), response headers (prompt processing can take minutes),
and idle reads between body chunks (enforced by the body consumers, see
``fwd_sse``). There is deliberately no total timeout: a stream may run for hours.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hyperlink import EncodedURL
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import (
    ConnectError,
    ConnectionDone,
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web._newclient import RequestNotSent, RequestTransmissionFailed
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    ResponseDone,
    ResponseNeverReceived,
    _HTTP11ClientFactory,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer, IResponse
from zope.interface import implementer

from server_core.errors import UpstreamError

__all__ = [
    "HOP_BY_HOP",
    "BodyIncomplete",
    "UpstreamClient",
    "UpstreamSettings",
    "abort_body_transport",
    "forwardable_headers",
    "read_complete_body",
]

# RFC 9110 7.6.1 hop-by-hop headers, plus what a proxy must set itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"accept-encoding",
    }
)
# Credentials of the client are for server_core, never for the upstream.
_CLIENT_SECRETS = frozenset({b"authorization", b"x-api-key", b"cookie", b"api-key"})


@dataclass(frozen=True)
class UpstreamSettings:
    connect_timeout: float = 10.0
    header_timeout: float = 600.0
    idle_timeout: float = 300.0
    max_connections_per_host: int = 256


def set_nodelay(transport: Any) -> None:
    """Disable Nagle on the TCP connection under ``transport`` (also below TLS)."""
    while transport is not None:
        setter = getattr(transport, "setTcpNoDelay", None)
        if setter is not None:
            setter(True)
            return
        transport = getattr(transport, "transport", None)


class _Pool(HTTPConnectionPool):
    """A pool that never takes back a connection that is already going away.

    When a relay aborts the upstream socket (error event, client gone) in the same
    read that completes the body, Twisted would otherwise pool the aborting
    connection and send the next request into it (found by the chaos runner).
    """

    def _putConnection(self, key: Any, connection: Any) -> None:
        transport = connection.transport
        if transport is None or (
            getattr(transport, "_aborting", False)
            or getattr(transport, "disconnecting", False)
            or getattr(transport, "disconnected", False)
        ):
            return
        super()._putConnection(key, connection)


class _QuietClientFactory(_HTTP11ClientFactory):
    # One log line per pooled connection opened and closed is noise in a proxy.
    noisy = False


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body that is already in memory: written at once."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> defer.Deferred[None]:
        consumer.write(self._data)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@implementer(IStreamClientEndpoint)
class _NoDelayEndpoint:
    def __init__(self, inner: IStreamClientEndpoint) -> None:
        self._inner = inner

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        def nodelay(protocol: Any) -> Any:
            set_nodelay(protocol.transport)
            return protocol

        return self._inner.connect(factory).addCallback(nodelay)


@implementer(IAgentEndpointFactory)
class _NoDelayEndpointFactory:
    """Plain/TLS endpoints like Agent's own, with Nagle off (small requests leave at once)."""

    def __init__(self, reactor: Any, connect_timeout: float) -> None:
        self._reactor = reactor
        self._timeout = connect_timeout
        self._endpoints: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        # Agent asks for an endpoint on every request, even when the pool has a
        # connection; building one costs an IDNA round trip, so keep them.
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._build(uri)
            if len(self._endpoints) < 1024:
                self._endpoints[key] = endpoint
        return endpoint

    def _build(self, uri: Any) -> IStreamClientEndpoint:
        host = uri.host.decode("idna") if isinstance(uri.host, bytes) else uri.host
        tcp = HostnameEndpoint(self._reactor, host, uri.port, timeout=self._timeout)
        if uri.scheme == b"https":
            from twisted.internet.ssl import optionsForClientTLS

            return _NoDelayEndpoint(wrapClientTLS(optionsForClientTLS(host), tcp))
        return _NoDelayEndpoint(tcp)


def forwardable_headers(client_headers: Headers | None) -> Headers:
    """Client headers minus hop-by-hop ones and the client's own credentials."""
    out = Headers()
    if client_headers is None:
        return out
    connection_tokens: set[bytes] = set()
    for value in client_headers.getRawHeaders(b"connection", []):
        connection_tokens.update(t.strip().lower() for t in value.split(b","))
    for name, values in client_headers.getAllRawHeaders():
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in _CLIENT_SECRETS or lname in connection_tokens:
            continue
        out.setRawHeaders(lname, list(values))
    return out


class UpstreamClient:
    """Sends requests upstream; never forwards the client's credentials."""

    def __init__(self, reactor: Any, settings: UpstreamSettings | None = None) -> None:
        self._reactor = reactor
        self.settings = settings or UpstreamSettings()
        self._pool = _Pool(reactor, persistent=True)
        self._pool._factory = _QuietClientFactory
        self._pool.maxPersistentPerHost = self.settings.max_connections_per_host
        self._pool.retryAutomatically = False
        self._agent = Agent.usingEndpointFactory(
            reactor, _NoDelayEndpointFactory(reactor, self.settings.connect_timeout), self._pool
        )
        self._urls: dict[str, bytes] = {}

    async def post_json(
        self,
        url: str,
        body: Mapping[str, Any],
        *,
        client_headers: Headers | None = None,
        api_key: str | None = None,
        upstream_name: str,
    ) -> IResponse:
        """POST ``body`` as JSON and return the response once its headers arrived.

        Retries once, and only when the request provably never left (stale pooled
        connection noticed before sending). Failures become ``UpstreamError``.
        """
        headers = forwardable_headers(client_headers)
        headers.setRawHeaders(b"content-type", [b"application/json"])
        if not headers.hasHeader(b"accept"):
            headers.setRawHeaders(b"accept", [b"application/json, text/event-stream"])
        if api_key:
            headers.setRawHeaders(b"authorization", [f"Bearer {api_key}".encode()])
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        return await self._request("POST", url, headers, payload, upstream_name)

    async def get(self, url: str, *, api_key: str | None = None, upstream_name: str) -> IResponse:
        headers = Headers({b"accept": [b"application/json"]})
        if api_key:
            headers.setRawHeaders(b"authorization", [f"Bearer {api_key}".encode()])
        return await self._request("GET", url, headers, None, upstream_name)

    async def _request(
        self, method: str, url: str, headers: Headers, payload: bytes | None, upstream_name: str
    ) -> IResponse:
        try:
            try:
                return await self._attempt(method, url, headers, payload)
            except (RequestNotSent, RequestTransmissionFailed, ResponseNeverReceived) as exc:
                if not _stale_connection(exc):
                    raise
                # A pooled keep-alive connection the upstream had already closed: it never
                # read this request. One retry; the pool has dropped the closed connection.
                return await self._attempt(method, url, headers, payload)
        except defer.CancelledError:
            raise
        except (RequestNotSent, RequestTransmissionFailed):
            raise UpstreamError(
                f"{upstream_name}: the connection closed before the request was sent"
            ) from None
        except Exception as exc:
            if any(isinstance(r, defer.CancelledError) for r in _reasons(exc)):
                # Our own cancel (client gone, shutdown) seen through Agent's wrapper.
                raise defer.CancelledError() from None
            raise _as_upstream_error(exc, upstream_name, self.settings) from None

    async def _attempt(
        self, method: str, url: str, headers: Headers, payload: bytes | None
    ) -> IResponse:
        timed_out = False

        def on_timeout(result: object, timeout: float) -> object:
            nonlocal timed_out
            timed_out = True
            return result

        body = _BytesProducer(payload) if payload is not None else None
        d = self._agent.request(method.encode("ascii"), self._encoded(url), headers, body)
        d.addTimeout(self.settings.header_timeout, self._reactor, on_timeout)
        try:
            response: IResponse = await d
        except Exception as exc:
            if timed_out:
                raise defer.TimeoutError() from exc
            raise
        return response

    def _encoded(self, url: str) -> bytes:
        """The URL as request-target bytes (IDNA host, escaped path), computed once."""
        encoded = self._urls.get(url)
        if encoded is None:
            encoded = EncodedURL.from_text(url).to_uri().to_text().encode("ascii")
            if len(self._urls) < 4096:  # a handful of upstreams x endpoints in practice
                self._urls[url] = encoded
        return encoded

    def close(self) -> defer.Deferred[None]:
        return self._pool.closeCachedConnections()


def _stale_connection(exc: BaseException) -> bool:
    """The request died on a connection the upstream had closed before reading it.

    Not sent or not fully transmitted: the upstream cannot have a whole request. No
    response byte and a clean close (FIN, no reset): what a server does to an idle
    keep-alive connection (llama-server closes them after a few requests), not what
    a crash looks like (reset, or a refused retry).
    """
    if isinstance(exc, RequestNotSent | RequestTransmissionFailed):
        return True
    if isinstance(exc, ResponseNeverReceived):
        reasons = [getattr(r, "value", None) for r in getattr(exc, "reasons", [])]
        return bool(reasons) and all(isinstance(r, ConnectionDone) for r in reasons)
    return False


def _reasons(exc: BaseException) -> Iterable[BaseException]:
    yield exc
    for reason in getattr(exc, "reasons", None) or []:
        value = getattr(reason, "value", None)
        if isinstance(value, BaseException):
            yield value


def _as_upstream_error(
    exc: BaseException, upstream_name: str, settings: UpstreamSettings
) -> UpstreamError:
    reasons = list(_reasons(exc))
    if any(isinstance(r, ConnectionRefusedError) for r in reasons):
        return UpstreamError(
            f"{upstream_name}: connection refused (is the upstream server running?)", status=502
        )
    if any(isinstance(r, DNSLookupError) for r in reasons):
        return UpstreamError(f"{upstream_name}: host name could not be resolved", status=502)
    if any(isinstance(r, TimeoutError) for r in reasons):
        return UpstreamError(
            f"{upstream_name}: could not connect within {settings.connect_timeout:g} s",
            status=504,
            type="timeout_error",
        )
    if any(isinstance(r, ConnectError) for r in reasons):
        return UpstreamError(f"{upstream_name}: could not connect", status=502)
    if isinstance(exc, defer.TimeoutError) or any(
        isinstance(r, defer.TimeoutError) for r in reasons
    ):
        return UpstreamError(
            f"{upstream_name}: no response headers within {settings.header_timeout:g} s",
            status=504,
            type="timeout_error",
        )
    if isinstance(exc, ResponseNeverReceived):
        return UpstreamError(
            f"{upstream_name}: the connection closed before a response arrived", status=502
        )
    return UpstreamError(f"{upstream_name}: request failed ({type(exc).__name__})", status=502)


class BodyIncomplete(Exception):
    """The upstream body ended early, went silent or was larger than allowed."""


class _BodyReader(Protocol):
    def __init__(self, limit: int, idle_timeout: float | None, clock: Any) -> None:
        self.done: defer.Deferred[bytes] = defer.Deferred(self._cancel)
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = limit
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._idle: Any = None

    def connectionMade(self) -> None:
        self._arm()

    def _arm(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        if self._idle_timeout:
            self._idle = self._clock.callLater(self._idle_timeout, self._stalled)

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._fail(BodyIncomplete(f"body larger than {self._limit} bytes"))
            return
        self._chunks.append(data)
        self._arm()

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        if self.done.called:
            return
        if reason.check(ResponseDone):
            self.done.callback(b"".join(self._chunks))
        else:
            self.done.errback(BodyIncomplete("connection lost before the body was complete"))

    def _stalled(self) -> None:
        self._fail(BodyIncomplete(f"nothing received for {self._idle_timeout:g} s"))

    def _fail(self, exc: Exception) -> None:
        self._abort()
        if not self.done.called:
            self.done.errback(exc)

    def _cancel(self, d: defer.Deferred[bytes]) -> None:
        self._abort()

    def _abort(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        abort_body_transport(self.transport)


def abort_body_transport(transport: Any) -> None:
    """Abort the TCP connection under a response body (RST, frees the upstream slot)."""
    if transport is None:
        return
    real = getattr(transport, "_producer", None)
    if real is not None and hasattr(real, "abortConnection"):
        real.abortConnection()
    else:
        transport.stopProducing()


def read_complete_body(
    response: IResponse, *, limit: int, idle_timeout: float | None, clock: Any
) -> defer.Deferred[bytes]:
    """The whole body, or ``BodyIncomplete``; cancelling aborts the connection."""
    reader = _BodyReader(limit, idle_timeout, clock)
    response.deliverBody(reader)
    return reader.done
