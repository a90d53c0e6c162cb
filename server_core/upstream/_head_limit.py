"""A bound on upstream response heads: their size and their number of header lines.

Twisted's client parser caps each line (16 KiB) but not how many lines arrive, so an
upstream that keeps sending header lines grows the connection's memory until the
header timeout (600 s by default). ``HeadLimitedProtocol`` counts the bytes and lines
of each response head as they arrive and aborts the connection when either passes its
limit; the request then fails with ``ResponseHeadTooLarge``, a 502 that names it.

Counting happens before Twisted parses the bytes, so a chunk that also holds body
bytes is counted only up to the blank line that ends the head. Interim ``1xx`` heads
count toward the same limits as the final head they precede.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from server_core._twisted_compat import (
    HTTP11ClientFactory,
    HTTP11ClientProtocol,
    quiescent_callback,
)

__all__ = ["HeadLimitedProtocol", "ResponseHeadTooLarge", "head_limited_factory"]


class ResponseHeadTooLarge(Exception):
    """An upstream's response head passed ``max_header_bytes`` or ``max_headers``."""


class HeadLimitedProtocol(HTTP11ClientProtocol):
    """An ``HTTP11ClientProtocol`` that refuses response heads over its limits."""

    def __init__(self, quiescent: Any, max_bytes: int, max_lines: int) -> None:
        super().__init__(quiescent)
        self._max_bytes = max_bytes
        self._max_lines = max_lines
        self._reading_head = False
        self._size = 0
        self._lines = 0
        self._previous = b""  # the head's last bytes, to find a blank line split by a read
        self._status = b""  # the start of the current head's status line
        self._refused: ResponseHeadTooLarge | None = None

    def request(self, request: Any) -> Any:
        self._reading_head, self._size, self._lines = True, 0, 0
        self._previous, self._status = b"", b""
        return super().request(request)

    def dataReceived(self, data: bytes) -> None:
        if self._refused is not None:
            return
        if self._reading_head:
            self._count(data)
            if self._refused is not None:
                self.transport.abortConnection()
                return
        super().dataReceived(data)

    def _count(self, data: bytes) -> None:
        """Count the head bytes of ``data``; set ``_refused`` when over a limit."""
        while data and self._reading_head:
            if len(self._status) < 12:
                self._status += data[: 12 - len(self._status)]
            end = _head_end(self._previous, data)
            head, data = (data, b"") if end is None else (data[:end], data[end:])
            self._size += len(head)
            self._lines += head.count(b"\n")
            self._previous = (self._previous + head)[-2:]
            # The status line and the blank line are lines too.
            if self._size > self._max_bytes or self._lines > self._max_lines + 2:
                self._refused = ResponseHeadTooLarge(
                    f"response headers larger than {self._max_bytes} bytes or more than "
                    f"{self._max_lines} lines (server.upstream.max_header_bytes, max_headers)"
                )
                return
            if end is not None:
                # "HTTP/1.1 1xx" is an interim head: the final one follows, still counted.
                self._reading_head = self._status[9:10] == b"1"
                self._status, self._previous = b"", b""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # The abort above surfaces as the reason, not as a bare ConnectionAborted.
        super().connectionLost(Failure(self._refused) if self._refused is not None else reason)


def _head_end(previous: bytes, data: bytes) -> int | None:
    """Where in ``data`` the head ends (just after its blank line), or None.

    ``previous`` holds the last bytes of the head before ``data`` (at most two), so a
    blank line split between two reads is found. Lines end in LF, CR LF allowed.
    """
    window = previous + data
    ends = [at + len(mark) for mark in (b"\n\n", b"\n\r\n") if (at := window.find(mark)) >= 0]
    return min(ends) - len(previous) if ends else None


def head_limited_factory(max_bytes: int, max_lines: int) -> type[HTTP11ClientFactory]:
    """A pool connection factory (see ``use_connection_factory``) with these limits."""

    class _HeadLimitedFactory(HTTP11ClientFactory):
        noisy = False  # one log line per pooled connection opened and closed is noise

        def buildProtocol(self, addr: Any) -> HeadLimitedProtocol:
            return HeadLimitedProtocol(quiescent_callback(self), max_bytes, max_lines)

    return _HeadLimitedFactory
