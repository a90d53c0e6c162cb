"""UpstreamClient: Twisted's Agent with its own pool, timeouts and cancellation.

Agent is the layer treq wraps. A proxy wants it bare: treq follows redirects, keeps
one cookie jar shared by every client's requests, asks for gzip and decodes it, and
re-parses the URL (with IDNA) on every request, which cost about half a millisecond
of CPU per request here.

Timeouts: connect (TCP), response headers (prompt processing can take minutes),
and idle reads between body chunks (enforced by the body consumers, see ``body``
and ``ForwardedSse``). There is deliberately no total timeout: a stream may run
for hours.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from hyperlink import EncodedURL
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.web.client import Agent, RequestTransmissionFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from server_core._twisted_compat import RequestNotSent
from server_core.config.settings import UpstreamSettings
from server_core.interfaces import IUpstreamClient
from server_core.upstream._failures import as_upstream_error, failure_reasons
from server_core.upstream._pool import NoDelayEndpointFactory, UpstreamPool
from server_core.upstream.headers import forwardable_headers

__all__ = ["UpstreamClient"]

_MAX_CACHED_URLS = 4096  # a handful of upstreams x endpoints in practice


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body that is already in memory: written at once.

    ``body`` is public so that a canned agent (``server_core.testing``) can record it.
    """

    def __init__(self, data: bytes) -> None:
        self.body = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> defer.Deferred[None]:
        consumer.write(self.body)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


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


def _with_api_key(headers: Headers, api_key: str | None) -> Headers:
    """``headers`` carrying the upstream's own key, when it has one."""
    if api_key:
        headers.setRawHeaders(b"authorization", [f"Bearer {api_key}".encode()])
    return headers


@implementer(IUpstreamClient)
class UpstreamClient:
    """Sends requests upstream; never forwards the client's credentials.

    ``agent`` replaces the Agent it would build on its own pool (tests pass a canned one).
    """

    def __init__(
        self,
        reactor: IReactorTime,
        settings: UpstreamSettings | None = None,
        *,
        agent: IAgent | None = None,
    ) -> None:
        self._reactor = reactor
        self.settings = settings or UpstreamSettings()
        self._pool = UpstreamPool(reactor, self.settings)
        self._agent: IAgent = (
            agent
            if agent is not None
            else Agent.usingEndpointFactory(
                reactor, NoDelayEndpointFactory(reactor, self.settings.connect_timeout), self._pool
            )
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
        remote_api: bool = False,
    ) -> IResponse:
        """POST ``body`` as JSON and return the response once its headers arrived.

        Retries once, and only when the request provably never left (stale pooled
        connection noticed before sending). Failures become ``UpstreamError``.
        ``remote_api``: the upstream is an API alias (someone else's service).
        """
        # An API alias, or any upstream holding the operator's key, gets the strict
        # allowlist (see ``headers``): test-only headers never reach someone else's API.
        strict = remote_api or bool(api_key)
        headers = forwardable_headers(client_headers, with_operator_key=strict)
        headers.setRawHeaders(b"content-type", [b"application/json"])
        if not headers.hasHeader(b"accept"):
            headers.setRawHeaders(b"accept", [b"application/json, text/event-stream"])
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        return await self._request(
            "POST", url, _with_api_key(headers, api_key), payload, upstream_name
        )

    async def get(self, url: str, *, api_key: str | None = None, upstream_name: str) -> IResponse:
        """GET ``url`` (JSON expected); same retry and error mapping as ``post_json``."""
        headers = _with_api_key(Headers({b"accept": [b"application/json"]}), api_key)
        return await self._request("GET", url, headers, None, upstream_name)

    async def send_raw(
        self,
        method: str,
        url: str,
        payload: bytes | None,
        *,
        client_headers: Headers | None,
        upstream_name: str,
    ) -> IResponse:
        """Any method with the client's own body (``/upstream/{alias}/...`` pass-through).

        Only a managed or external llama-server gets it (no operator key travels); the
        client's ``content-type`` goes with its body, other headers by the allowlist.
        """
        headers = forwardable_headers(client_headers)
        content_type = client_headers.getRawHeaders(b"content-type") if client_headers else None
        if content_type:
            headers.setRawHeaders(b"content-type", content_type)
        return await self._request(method, url, headers, payload, upstream_name)

    def close(self) -> defer.Deferred[None]:
        """Close the pooled keep-alive connections (shutdown)."""
        return self._pool.closeCachedConnections()

    async def _request(
        self, method: str, url: str, headers: Headers, payload: bytes | None, upstream_name: str
    ) -> IResponse:
        """One request with the stale keep-alive retry; failures mapped for the client."""
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
        except (RequestNotSent, RequestTransmissionFailed) as exc:
            raise as_upstream_error(exc, upstream_name, self.settings) from None
        except Exception as exc:
            if any(isinstance(r, defer.CancelledError) for r in failure_reasons(exc)):
                # Our own cancel (client gone, shutdown) seen through Agent's wrapper.
                raise defer.CancelledError() from None
            raise as_upstream_error(exc, upstream_name, self.settings) from None

    async def _attempt(
        self, method: str, url: str, headers: Headers, payload: bytes | None
    ) -> IResponse:
        """One try; no headers within ``header_timeout`` fails with ``defer.TimeoutError``."""
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
            if len(self._urls) < _MAX_CACHED_URLS:
                self._urls[url] = encoded
        return encoded
