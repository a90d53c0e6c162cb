"""The HTTP site and its hardening: a body cap, a request deadline, no version banner.

``GuardedSite`` is a twisted.web ``Site`` whose requests are refused with 413 before an
oversized body is read, whose connections must deliver each request (headers and body)
within a deadline, and which can close every connection after flushing it (the drain's
last step). No body is parsed before routing and authentication (Twisted would turn form
and multipart bodies into ``request.args`` first). Every answer it gives itself is an
OpenAI-shaped JSON error: Twisted's bare ``400`` for an unparseable request, its silent
close for an over-long line, its ``100 Continue`` after a 413, undecodable URLs, the
``*`` target, a missing or repeated ``Host`` and empty path segments (which the router
would answer with a redirect that escapes as a 500).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet import defer
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import server

from server_core._twisted_compat import (
    EarlyAnswerChannel,
    GenericHTTPChannelProtocol,
    channel_disconnected,
)
from server_core.errors import BadRequest, BodyTooLarge, NotFound, ServerCoreError
from server_core.upstream import set_nodelay

__all__ = ["HEADER_TIMEOUT", "GuardedChannel", "GuardedRequest", "GuardedSite", "write_and_close"]

HEADER_TIMEOUT = 30.0

_MALFORMED = BadRequest(
    "The HTTP request is malformed: check the request line (METHOD /path HTTP/1.1), the "
    "header syntax (Name: value, no control characters), the Content-Length or chunked "
    "framing, and that the headers stay within 500 lines and 16384 bytes.",
    code="malformed_request",
)


def _early_error(request: server.Request) -> ServerCoreError | None:
    """What is wrong with a request before any route sees it, or None."""
    if request.path == b"*":
        return BadRequest(
            "The request target '*' is not supported; request a path such as /v1/models.",
            code="invalid_request_target",
        )
    hosts = request.requestHeaders.getRawHeaders(b"host") or []
    if len(hosts) > 1 or (not hosts and request.clientproto == b"HTTP/1.1"):
        return BadRequest(
            f"An HTTP/1.1 request must carry exactly one Host header; this one has {len(hosts)}.",
            code="invalid_host_header",
        )
    try:
        unquote_to_bytes(request.path).decode("utf-8")
    except UnicodeDecodeError:
        return BadRequest("The URL is not valid UTF-8 after percent-decoding.")
    if b"//" in request.path:
        # The router answers an empty segment with a redirect that escapes it (a 500).
        path = request.path.decode("utf-8", "replace")[:200]
        return NotFound(f"Unknown route: {path}", code="not_found")
    return None


class GuardedRequest(server.Request):
    """Rejects bodies over the site's cap with 413 before reading them whole.

    Bodies are never parsed here (``parsePOSTFormSubmission=False``): the route reads
    ``content`` after authentication. Query-string arguments are still in ``args``.
    """

    _received = 0
    rejected = False

    def __init__(self, channel: Any, *args: Any, **kw: Any) -> None:
        kw["parsePOSTFormSubmission"] = False
        super().__init__(channel, *args, **kw)

    def _cap(self) -> int:
        site = getattr(self.channel, "site", None)
        return int(getattr(site, "max_body_bytes", 10 * 1024 * 1024))

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._cap():
            self._reject()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.rejected:
            return
        self._received += len(data)
        if self._received > self._cap():
            self._reject()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self.rejected:
            super().requestReceived(command, path, version)

    def process(self) -> None:
        # Klein would answer these with HTML, an empty 405 or a 500; ours are JSON.
        error = _early_error(self)
        if error is not None:
            body = error.to_json()
            self.setResponseCode(error.status)
            self.setHeader(b"content-type", b"application/json")
            self.setHeader(b"content-length", str(len(body)).encode())
            self.write(body)
            self.finish()
            return
        super().process()

    def setHeader(self, name: bytes | str, value: bytes | str) -> None:
        # No version banner: the software behind a public port is nobody's business.
        if (name.lower() if isinstance(name, bytes) else name.lower().encode()) == b"server":
            value = b"server-core"
        super().setHeader(name, value)

    def _reject(self) -> None:
        self.rejected = True
        cap = self._cap()
        error = BodyTooLarge(
            f"The request body is larger than {cap} bytes; send a smaller request."
        )
        transport = self.channel.transport
        if transport is not None:
            write_and_close(transport, error, b"Payload Too Large")


def write_and_close(transport: Any, error: ServerCoreError, reason: bytes) -> None:
    """Write ``error`` as a whole HTTP/1.1 response below any Request, then close.

    For answers given before (or instead of) a ``Request``: Twisted's parser refusals
    and the body cap, where the request's own response machinery is not usable.
    """
    body = error.to_json()
    transport.write(
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (error.status, reason, len(body), body)
    )
    transport.loseConnection()


class GuardedChannel(EarlyAnswerChannel):
    """Closes connections whose request (headers and body) takes longer than the deadline.

    The deadline also bounds how long an idle keep-alive connection waits for its next
    request; it is off while a response is being produced (streams may last hours).
    Twisted's own refusals (see ``EarlyAnswerChannel``) are answered in JSON.
    """

    header_timeout = HEADER_TIMEOUT
    _deadline: Any = None
    # No byte of a request since the connection opened or the last response: a deadline
    # reached then closes cleanly (FIN) instead of resetting, since nothing was cut.
    _idle = True
    _refused = False

    def connectionMade(self) -> None:
        super().connectionMade()
        site = getattr(self, "site", None)
        if isinstance(site, GuardedSite):
            site.channels.add(self)
        # SSE frames are small writes that must leave at once: without TCP_NODELAY,
        # Nagle holds the first event until the client's delayed ACK (up to 40 ms).
        set_nodelay(self.transport)
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.callLater(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def dataReceived(self, data: bytes) -> None:
        if data:
            self._idle = False
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        self._disarm()
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        # Arm before Twisted starts a pipelined request that is already buffered: that
        # request's allContentReceived disarms it again, and a stream is never cut.
        # Buffered bytes of that request reach dataReceived, which clears _idle.
        self._idle = True
        if self.transport is not None and not channel_disconnected(self):
            self._arm()
        super().requestDone(request)

    def bad_request(self) -> None:
        if self._refused or self.transport is None:
            return
        self._refused = True
        write_and_close(self.transport, _MALFORMED, b"Bad Request")

    def lineLengthExceeded(self, line: bytes) -> None:
        # Twisted closes with no status at all; say which limit was hit.
        if self._refused or self.transport is None:
            return
        self._refused = True
        error = BadRequest(
            f"A request line or header line is longer than {self.MAX_LENGTH} bytes; "
            "shorten the URL or the header.",
            status=431,
            code="request_header_fields_too_large",
        )
        write_and_close(self.transport, error, b"Request Header Fields Too Large")

    def continue_allowed(self) -> bool:
        # No "100 Continue" behind the 413 that already refused this body.
        return not (self.requests and getattr(self.requests[-1], "rejected", False))

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport is None:
            return
        if self._idle:
            # A keep-alive connection that simply ended its idle time. The reset stays as
            # a backstop for a peer that never reads what is still buffered for it.
            self.transport.loseConnection()
            self._deadline = self.callLater(self.header_timeout, self._reset)
        else:
            self._reset()

    def _reset(self) -> None:
        self._deadline = None
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        super().connectionLost(reason)
        site = getattr(self, "site", None)
        if isinstance(site, GuardedSite):
            site.channel_closed(self)


class GuardedSite(server.Site):
    """A Site with a body cap, a header deadline and no version banner."""

    requestFactory = GuardedRequest

    def __init__(self, resource: Any, *, max_body_bytes: int, header_timeout: float, **kw: Any):
        # Bodies are read by the routes after authentication, never parsed into args here.
        super().__init__(resource, parsePOSTFormSubmission=False, **kw)
        self.max_body_bytes = max_body_bytes
        self.header_timeout = header_timeout
        self.displayTracebacks = False
        self.channels: set[GuardedChannel] = set()
        self._closed_waiters: list[defer.Deferred[None]] = []

    def channel_closed(self, channel: GuardedChannel) -> None:
        self.channels.discard(channel)
        if not self.channels:
            waiters, self._closed_waiters = self._closed_waiters, []
            for d in waiters:
                d.callback(None)

    async def close_connections(self, timeout: float) -> None:
        """Close every client connection after its buffered bytes are written.

        The reactor's own shutdown drops connections without flushing, which would
        cut the last frames (and ``[DONE]``) of streams that ended during the drain.
        """
        if not self.channels:
            return
        d: defer.Deferred[None] = defer.Deferred()
        self._closed_waiters.append(d)
        for channel in list(self.channels):
            if channel.transport is not None:
                channel.transport.loseConnection()
        d.addTimeout(timeout, self.reactor)
        try:
            await d
        except defer.TimeoutError:
            for channel in list(self.channels):
                if channel.transport is not None:
                    channel.transport.abortConnection()  # type: ignore[attr-defined]

    def protocol(self) -> Any:
        # Same wrapper Twisted uses (HTTP/1.1 with optional h2), around our channel.
        channel = GuardedChannel()
        channel.header_timeout = self.header_timeout
        return GenericHTTPChannelProtocol(channel)
