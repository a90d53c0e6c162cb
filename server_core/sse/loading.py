"""Comments for a stream request that waits for its model to start: ``: loading model ...``.

A streaming request for a managed model whose llama-server is not running waits for its
lease (``ISharedContext.acquire``) before any byte can go out: tens of seconds for a cold
start or a swap, long enough for a client or a proxy in between to give up on a silent
socket. ``LoadingPrelude`` commits to the stream once the wait has lasted ``START_GRACE``:
a 200 with the event-stream headers, then one SSE comment about every ``COMMENT_INTERVAL``
seconds saying what the wait is for (``: loading model 'm' (3 s, starting)``). Comments
only: every SSE parser drops them, so no client ever shows them as text. A wait shorter
than the grace sends nothing at all, so warm models and fast starts answer exactly as
before, HTTP error statuses included.

Once committed, a failure has one honest ending left: one error event in the stream's
dialect (``end_with``), never a status line after the 200. When the reply arrives, the
relay (``ForwardedSse``) continues on the same response: ``SseResponse.begin`` sees the
headers already out and sends none. A client that leaves during the wait cancels it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from twisted.web.server import Request

from server_core._twisted_compat import request_disconnected
from server_core.errors import ContextError, ServerCoreError, internal_error
from server_core.sse.codec import encode_comment
from server_core.sse.dialects import CHAT, StreamDialect
from server_core.sse.writer import SseResponse, start_event_stream

__all__ = ["COMMENT_INTERVAL", "START_GRACE", "LoadingPrelude", "loading_comment"]

START_GRACE = 1.0
"""Seconds a stream request may wait for its lease in silence before it is committed."""
COMMENT_INTERVAL = 1.0
"""Seconds between two loading comments once committed."""

_T = TypeVar("_T")
_LOADING_STATES = frozenset({"queued", "stopped", "starting", "stopping", "failed"})


def loading_comment(alias: str, seconds: float, state: str | None) -> bytes:
    """The comment frame for a wait of ``seconds`` on ``alias`` whose server is ``state``.

    ``queued`` (no server yet: a swap or a free place is awaited) and ``starting`` are a
    load; a ready server whose every slot is busy is a plain wait.
    """
    state = state or "queued"
    what = "loading model" if state in _LOADING_STATES else "waiting for model"
    name = alias.replace("\r", " ").replace("\n", " ")
    return encode_comment(f"{what} '{name}' ({seconds:.0f} s, {state})")


def _wait_cause(error: ServerCoreError) -> str:
    """The cause label of a committed stream whose wait failed (``metrics.outcome``)."""
    return "start_failed" if isinstance(error, ContextError) else "upstream_error"


class LoadingPrelude:
    """Turns a long wait for a lease into an open stream of comments (see module doc).

    ``on_commit(model, alias)`` runs just before the headers go out (what the metrics and
    ``X-Served-By`` need to know of the reply to come); ``on_error(error, cause)`` just
    before the one error event.
    """

    def __init__(
        self,
        request: Request,
        clock: IReactorTime,
        *,
        dialect: StreamDialect = CHAT,
        grace: float = START_GRACE,
        interval: float = COMMENT_INTERVAL,
        on_commit: Callable[[str | None, str], None] | None = None,
        on_error: Callable[[ServerCoreError, str], None] | None = None,
    ) -> None:
        self._request = request
        self._clock = clock
        self._dialect = dialect
        self._grace = grace
        self._interval = interval
        self._on_commit = on_commit
        self._on_error = on_error
        self._timer: IDelayedCall | None = None
        self._waiting: defer.Deferred[Any] | None = None
        self._alias = ""
        self._model: str | None = None
        self._progress: Callable[[], str | None] = lambda: None
        self._since = 0.0
        self._committed = False
        self._gone = False
        self._ended = False

    @property
    def committed(self) -> bool:
        """True once the 200 and the event-stream headers have gone out."""
        return self._committed

    def watch(
        self,
        waiting: defer.Deferred[_T],
        alias: str,
        *,
        model: str | None = None,
        progress: Callable[[], str | None] = lambda: None,
    ) -> defer.Deferred[_T]:
        """Comment on ``waiting`` (the lease for ``alias``) once it outlasts the grace.

        ``progress`` tells the state of the alias's server (``starting``, ``ready``...,
        None when it has none yet). ``waiting`` is returned as it is: already fired (a
        warm model), it arms nothing.
        """
        if waiting.called or self._ended:
            return waiting
        self._waiting, self._alias, self._model = waiting, alias, model
        self._progress = progress
        self._since = self._clock.seconds()
        self._stop_timer()
        delay = self._interval if self._committed else self._grace
        self._timer = self._clock.callLater(delay, self._due)
        waiting.addBoth(self._arrived)
        return waiting

    def stop(self) -> None:
        """No more comments: the reply is here (the relay writes from now on)."""
        self._stop_timer()

    def fail(self, exc: BaseException, *, replied: bool) -> None:
        """``end_with`` for what ended the wait (``replied`` False: the start, the queue,
        the request upstream) or the reply before its relay began (an error status)."""
        if not self._committed or self._ended:
            return
        if isinstance(exc, defer.CancelledError):
            # Not the client (it would have gone): the drain gave up on the wait.
            error: ServerCoreError = ContextError("The server is shutting down; retry the request.")
            cause = "drain"
        elif isinstance(exc, ServerCoreError):
            error = exc
            cause = "upstream_status" if replied else _wait_cause(exc)
        else:
            error, cause = internal_error(exc, "stream request"), "internal"
        self.end_with(error, cause)

    def end_with(self, error: ServerCoreError, cause: str) -> None:
        """End a committed stream with one error event in its dialect (once; no-op when
        not committed, already ended, or the client has left)."""
        if not self._committed or self._ended:
            return
        self._ended = True
        self._stop_timer()
        if self._gone or request_disconnected(self._request) or self._request.finished:
            return
        if self._on_error is not None:
            self._on_error(error, cause)
        out = SseResponse(
            self._request,
            self._clock,
            keepalive_interval=None,
            on_client_gone=lambda: None,
            dialect=self._dialect,
        )
        out.begin()
        out.end_error(error)

    # -- the wait --------------------------------------------------------------------

    def _arrived(self, result: _T) -> _T:
        if not self._committed:
            self._stop_timer()  # in time: nothing was sent, nothing will be
        self._waiting = None
        return result

    def _due(self) -> None:
        self._timer = None
        if self._ended or self._gone:
            return
        if not self._committed:
            self._commit()
        state = self._progress()
        seconds = self._clock.seconds() - self._since
        self._request.write(loading_comment(self._alias, seconds, state))
        self._timer = self._clock.callLater(self._interval, self._due)

    def _commit(self) -> None:
        if self._on_commit is not None:
            self._on_commit(self._model, self._alias)
        start_event_stream(self._request)
        self._request.notifyFinish().addErrback(self._client_gone)
        self._committed = True

    def _client_gone(self, reason: Failure) -> None:
        self._gone = True
        self._stop_timer()
        waiting = self._waiting
        if waiting is not None and not waiting.called:
            waiting.cancel()  # the lease is no longer wanted: leave the queue

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
