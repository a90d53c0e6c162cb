"""The HTTP site and its hardening: a body cap, a request deadline, no version banner.

``GuardedSite`` is a twisted.web ``Site`` whose requests are refused with 413 before an
oversized body is read, whose connections must deliver each request (headers and body)
within a deadline, whose undecodable URLs get a JSON 400 instead of Klein's HTML page,
and which can close every connection after flushing it (the drain's last step).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet import defer
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http, server

from server_core._twisted_compat import GenericHTTPChannelProtocol, channel_disconnected
from server_core.errors import BadRequest, BodyTooLarge
from server_core.upstream import set_nodelay

__all__ = ["HEADER_TIMEOUT", "GuardedChannel", "GuardedRequest", "GuardedSite"]

HEADER_TIMEOUT = 30.0


class GuardedRequest(server.Request):
    """Rejects bodies over the site's cap with 413 before reading them whole."""

    _received = 0
    _rejected = False

    def _cap(self) -> int:
        site = getattr(self.channel, "site", None)
        return int(getattr(site, "max_body_bytes", 10 * 1024 * 1024))

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._cap():
            self._reject()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._rejected:
            return
        self._received += len(data)
        if self._received > self._cap():
            self._reject()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self._rejected:
            super().requestReceived(command, path, version)

    def process(self) -> None:
        # Klein answers an undecodable URL with an HTML page; ours is JSON like the rest.
        try:
            unquote_to_bytes(self.path).decode("utf-8")
        except UnicodeDecodeError:
            body = BadRequest("The URL is not valid UTF-8 after percent-decoding.").to_json()
            self.setResponseCode(400)
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
        self._rejected = True
        cap = self._cap()
        body = BodyTooLarge(
            f"The request body is larger than {cap} bytes; send a smaller request."
        ).to_json()
        transport = self.channel.transport
        if transport is None:
            return
        transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )
        transport.loseConnection()


class GuardedChannel(http.HTTPChannel):
    """Closes connections whose request (headers and body) takes longer than the deadline.

    The deadline also bounds how long an idle keep-alive connection waits for its next
    request; it is off while a response is being produced (streams may last hours).
    """

    header_timeout = HEADER_TIMEOUT
    _deadline: Any = None
    # No byte of a request since the connection opened or the last response: a deadline
    # reached then closes cleanly (FIN) instead of resetting, since nothing was cut.
    _idle = True

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
        super().__init__(resource, **kw)
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
