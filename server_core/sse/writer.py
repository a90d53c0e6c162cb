"""The client side of every SSE response: headers, keep-alive, ending exactly once.

``DirectSse`` (``direct``) and ``ForwardedSse`` (``forwarded``) both write through an
``SseResponse``. It owns the three honest endings of a stream after headers: complete
(``[DONE]``, or the dialect's own last event), one error event in the stream's dialect
(``dialects``), or nothing at all because the client left.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from server_core.errors import ServerCoreError
from server_core.sse.codec import DONE_FRAME, encode_comment
from server_core.sse.dialects import CHAT, StreamDialect

__all__ = [
    "KEEPALIVE_FRAME",
    "Ending",
    "SseResponse",
    "dialect_error_event",
    "error_event",
    "start_event_stream",
]

log = Logger()

KEEPALIVE_FRAME = encode_comment("keep-alive")


class Ending(enum.Enum):
    """How a stream ended: complete, with one error event, or because the client left."""

    DONE = "done"
    ERROR = "error"
    CLIENT_GONE = "client_gone"


class _State(enum.Enum):
    OPEN = "open"
    ENDED = "ended"


def error_event(error: ServerCoreError) -> bytes:
    """The one error frame that ends a failed OpenAI stream: the error's JSON body as ``data``."""
    return b"data: " + json.dumps(error.to_dict()).encode("utf-8") + b"\n\n"


def dialect_error_event(dialect: StreamDialect, error: ServerCoreError, sequence: int) -> bytes:
    """The one error frame of ``dialect`` that carries ``error``."""
    if dialect.completes_with_marker or dialect.name == "native":
        return error_event(error)  # OpenAI's shape, byte for byte as it always was
    return dialect.error_frame(
        error.message, error.type, error.code, error.param, sequence_number=sequence
    )


def start_event_stream(request: Request) -> None:
    """Send a 200 with the event-stream headers now, unless the response has begun."""
    if getattr(request, "startedWriting", False):
        return
    request.setResponseCode(200)
    request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
    request.setHeader(b"cache-control", b"no-cache")
    request.setHeader(b"x-accel-buffering", b"no")
    # An empty write flushes the headers so the client sees them at once.
    request.write(b"")


class SseResponse:
    """Writes SSE frames to one request and ends it exactly once.

    ``on_client_gone`` runs once when the client disconnects before the end, so the
    owner can abort whatever feeds the stream (for a relay: the upstream socket).
    """

    def __init__(
        self,
        request: Request,
        clock: IReactorTime,
        *,
        keepalive_interval: float | None,
        on_client_gone: Callable[[], None],
        dialect: StreamDialect = CHAT,
    ) -> None:
        self._request = request
        self._dialect = dialect
        self._clock = clock
        self._interval = keepalive_interval if keepalive_interval else None
        self._on_client_gone = on_client_gone
        self._state = _State.OPEN
        self._ending: Ending | None = None
        self._waiters: list[defer.Deferred[Ending]] = []
        self._last_write = clock.seconds()
        self._keepalive: IDelayedCall | None = None
        self.frames_written = 0

    # -- lifecycle ---------------------------------------------------------------

    def begin(self, producer: IPushProducer | None = None) -> None:
        """Send the status line and headers now (first byte to the client).

        On a response already begun (``loading.LoadingPrelude`` committed it while the
        model started) no header goes out again: this writer takes the stream over.
        """
        req = self._request
        start_event_stream(req)
        req.notifyFinish().addErrback(self._client_gone)
        if producer is not None:
            req.registerProducer(producer, True)
        if self._interval is not None:
            self._keepalive = self._clock.callLater(self._interval, self._keepalive_due)

    @property
    def is_open(self) -> bool:
        """True until the response has ended, however it ended."""
        return self._state is _State.OPEN

    @property
    def ending(self) -> Ending | None:
        """How the response ended, or None while it is open."""
        return self._ending

    def when_ended(self) -> defer.Deferred[Ending]:
        """A fresh Deferred firing with how the response ended."""
        if self._ending is not None:
            return defer.succeed(self._ending)
        d: defer.Deferred[Ending] = defer.Deferred()
        self._waiters.append(d)
        return d

    # -- writing -----------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Write one complete frame (always at a frame boundary)."""
        if self._state is _State.OPEN:
            self._request.write(frame)
            self._last_write = self._clock.seconds()
            self.frames_written += 1

    def end_done(self, *, marker: bool = True) -> None:
        """Complete: ``[DONE]`` (streams such as log following end without it)."""
        if self._state is _State.OPEN:
            if marker:
                self._request.write(DONE_FRAME)
            self._end(Ending.DONE)

    def end_error(self, error: ServerCoreError) -> None:
        """One error event in the stream's dialect, then close, never a complete ending."""
        if self._state is _State.OPEN:
            self._request.write(dialect_error_event(self._dialect, error, self.frames_written))
            self._end(Ending.ERROR)

    def _end(self, ending: Ending) -> None:
        self._state = _State.ENDED
        self._ending = ending
        self._stop_keepalive()
        if ending is not Ending.CLIENT_GONE:
            self._request.unregisterProducer()
            self._request.finish()
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(ending)

    # -- client side events ------------------------------------------------------

    def _client_gone(self, reason: Failure) -> None:
        if self._state is _State.OPEN:
            self._end(Ending.CLIENT_GONE)
            try:
                self._on_client_gone()
            except Exception:
                log.failure("while aborting the source of a stream the client left")

    def _keepalive_due(self) -> None:
        self._keepalive = None
        if self._state is not _State.OPEN or self._interval is None:
            return
        idle = self._clock.seconds() - self._last_write
        if idle >= self._interval:
            self._request.write(self._dialect.keepalive)
            self._last_write = self._clock.seconds()
            delay = self._interval
        else:
            delay = self._interval - idle
        self._keepalive = self._clock.callLater(delay, self._keepalive_due)

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None and self._keepalive.active():
            self._keepalive.cancel()
        self._keepalive = None
