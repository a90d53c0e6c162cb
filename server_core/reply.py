"""An upstream reply delivered to the client: an error, a whole JSON body, or a stream.

This is where the router's answer meets the client's request, so it is the one place
that reads upstream bodies. Each of the three honest endings is decided here:

- a non-2xx upstream status becomes our own OpenAI-shaped error (its body read, bounded,
  and normalised: never a plain-text traceback, never an upstream's credentials);
- a JSON answer is read whole before the first byte is sent, so a truncated one becomes a
  502 instead of a broken document behind a 200;
- an event stream is relayed by ``ForwardedSse``, which ends it exactly once.

A stream request that waited long for its model to start may have been committed to its
stream already (``prelude``: ``sse.loading``): then there is no status left to send, and
an upstream error status or a whole JSON answer ends that stream with one error event.

Replies carry the model name the client asked for, whatever the upstream calls it.
``respond_via`` is the whole of one answer: forward, deliver, release the lease.

The ``/upstream/{alias}/...`` pass-through is the exception that proves the rule: its
reply is relayed raw (status, headers, body bytes as they arrive, paced by the client),
and an upstream lost mid-body aborts the client's connection, so a chunked body is never
completed by us after the upstream failed to.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol as BodyProtocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.server import Request

from server_core._twisted_compat import abort_body_transport
from server_core.errors import UpstreamError, internal_error, normalize_upstream_error
from server_core.metrics import cause_of, record_of
from server_core.sse import ForwardedSse
from server_core.sse.dialects import CHAT, StreamDialect
from server_core.sse.loading import START_GRACE, LoadingPrelude
from server_core.upstream import BodyIncomplete, read_complete_body
from server_core.upstream.headers import HOP_BY_HOP
from server_core.validation import missing_model

__all__ = ["Forward", "ReplyDelivery", "ReplyTracker", "respond_via"]

_T = TypeVar("_T")
_JSON = b"application/json"
# A whole (non-stream) JSON answer is held in memory before it is sent: a completion or
# a batch of embeddings is far smaller; more is a misbehaving upstream (-> 502).
_MAX_JSON_REPLY = 16 * 1024 * 1024
_MAX_ERROR_BODY = 64 * 1024


class ReplyTracker(Protocol):
    """What the drain needs to see of a reply in progress (``web.drain.InFlight``)."""

    def waiting(self, d: defer.Deferred[_T]) -> defer.Deferred[_T]:
        """Track ``d``, upstream work before the first byte, until it fires."""

    def add_stream(self, stream: ForwardedSse) -> None:
        """A stream is relaying: the drain may end it with an error event."""

    def discard_stream(self, stream: ForwardedSse) -> None:
        """That stream has ended."""


class ReplyDelivery:
    """Writes one ``UpstreamReply`` to one client request (see module doc)."""

    def __init__(
        self,
        clock: IReactorTime,
        *,
        keepalive_interval: float | None = 15.0,
        idle_timeout: float | None = 300.0,
        start_grace: float | None = START_GRACE,
    ) -> None:
        self._clock = clock
        self._keepalive = keepalive_interval
        self._idle_timeout = idle_timeout
        self._start_grace = start_grace

    def prelude(self, request: Request, dialect: StreamDialect) -> LoadingPrelude | None:
        """What comments on a stream request's long wait for its model (``sse.loading``);
        None when this delivery never commits early (``start_grace=None``)."""
        if self._start_grace is None:
            return None
        record = record_of(request)
        on_commit = on_error = None
        if record is not None:

            def on_commit(model: str | None, alias: str) -> None:
                record.served(model, alias)
                record.stream = True
                request.setHeader(b"x-served-by", record.served_by)

            def on_error(error: Any, cause: str) -> None:
                record.error_event(cause)

        return LoadingPrelude(
            request,
            self._clock,
            dialect=dialect,
            grace=self._start_grace,
            on_commit=on_commit,
            on_error=on_error,
        )

    async def deliver(self, request: Request, reply: Any, tracker: ReplyTracker) -> bytes | None:
        """The body to return for a JSON answer, or None once a stream has ended."""
        response = reply.response
        record = record_of(request)
        if record is not None:
            record.served(reply.model_name, getattr(reply, "alias", None) or reply.upstream_name)
            request.setHeader(b"x-served-by", record.served_by)
        committed = bool(getattr(request, "startedWriting", False))
        if not 200 <= response.code < 300:
            if record is not None and not committed:
                record.upstream_refused()
            raise await self._upstream_error(reply, tracker)
        content_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        if b"text/event-stream" in content_type.lower():
            await self._relay(request, reply, tracker)
            return None
        raw = await self._whole_json(reply, tracker, record)
        if committed:
            # Read (so the upstream connection is left clean), but a stream is open.
            raise UpstreamError(f"{reply.upstream_name} answered a stream with a whole body")
        request.setResponseCode(response.code)
        request.setHeader(b"content-type", _JSON)
        return raw

    async def _upstream_error(self, reply: Any, tracker: ReplyTracker) -> Exception:
        try:
            raw = await tracker.waiting(self._read(reply.response, _MAX_ERROR_BODY))
        except BodyIncomplete:
            raw = b""  # the status alone still says what happened
        return normalize_upstream_error(reply.response.code, raw, upstream=reply.upstream_name)

    async def _relay(self, request: Request, reply: Any, tracker: ReplyTracker) -> None:
        record = record_of(request)
        on_error = on_event = None
        if record is not None:
            record.stream = True
            clock = self._clock

            def on_error(error: Any, cause: str | None) -> None:
                # Noted before the response finishes; the drain's ending names no cause.
                record.error_event(cause or cause_of(error))

            def on_event(payload: object) -> None:
                record.event_at(clock.seconds())
                if isinstance(payload, dict) and (
                    "usage" in payload
                    or "timings" in payload
                    or "response" in payload
                    or "message" in payload
                ):
                    record.usage(payload)  # the members that carry token counts

        stream = ForwardedSse(
            request,
            reply.response,
            clock=self._clock,
            upstream_name=reply.upstream_name,
            keepalive_interval=self._keepalive,
            idle_timeout=self._idle_timeout,
            model_name=reply.model_name,
            dialect=getattr(reply, "dialect", CHAT),
            on_error=on_error,
            on_event=on_event,
        )
        tracker.add_stream(stream)
        try:
            await stream.relay()
        except defer.CancelledError:
            raise
        except Exception as exc:
            # Headers are out: the only honest ending left is one SSE error event.
            stream.end_with(internal_error(exc, "stream relay"), cause="internal")
        finally:
            tracker.discard_stream(stream)

    async def _whole_json(self, reply: Any, tracker: ReplyTracker, record: Any) -> bytes:
        name = reply.upstream_name
        try:
            raw = await tracker.waiting(self._read(reply.response, _MAX_JSON_REPLY))
            document = json.loads(raw)
        except BodyIncomplete as exc:
            raise UpstreamError(f"{name}: incomplete response ({exc})") from None
        except ValueError:
            raise UpstreamError(f"{name}: the response is not valid JSON") from None
        if record is not None and isinstance(document, dict):
            record.usage(document)
        wanted = reply.model_name
        if wanted is not None and isinstance(document, dict):
            if document.get("model") not in (None, wanted):
                document["model"] = wanted
                raw = json.dumps(document, ensure_ascii=False).encode("utf-8")
        return raw

    async def deliver_raw(
        self, request: Request, response: IResponse, tracker: ReplyTracker
    ) -> None:
        """Relay ``response`` as it is (see module doc); returns once it has ended."""
        request.setResponseCode(response.code, response.phrase)
        for name, values in response.headers.getAllRawHeaders():
            if name.lower() not in HOP_BY_HOP and name.lower() != b"server":
                request.responseHeaders.setRawHeaders(name, list(values))
        relay = _RawBody(request, self._clock, self._idle_timeout)
        response.deliverBody(relay)
        await tracker.waiting(relay.done)

    def _read(self, response: Any, limit: int) -> defer.Deferred[bytes]:
        return read_complete_body(
            response, limit=limit, idle_timeout=self._idle_timeout, clock=self._clock
        )


Forward = Callable[[str, dict[str, Any], Headers | None], Any]
"""How ``respond_via`` gets the reply: ``(endpoint, body, client headers) -> UpstreamReply``."""


async def respond_via(
    forward: Forward,
    delivery: ReplyDelivery,
    request: Request,
    endpoint: str,
    body: dict[str, Any],
    tracker: ReplyTracker,
    *,
    prelude: LoadingPrelude | None = None,
) -> bytes | None:
    """Forward, deliver the reply, and release its lease once the response has ended.

    ``prelude`` comments on a long wait for the model (``sse.loading``); once it has
    committed to the stream, every failure ends that stream with one error event.
    """
    if body.get("model") is None:
        raise missing_model()  # and no default model filled it in
    replied = False
    try:
        reply = await tracker.waiting(
            defer.ensureDeferred(forward(endpoint, body, request.requestHeaders))
        )
        replied = True
        if prelude is not None:
            prelude.stop()
        try:
            return await delivery.deliver(request, reply, tracker)
        finally:
            reply.release()
    except Exception as exc:
        if prelude is None or not prelude.committed:
            raise
        prelude.fail(exc, replied=replied)
        if isinstance(exc, defer.CancelledError):
            raise
        return None


class _RawBody(BodyProtocol):
    """Copies one upstream body to the client, paced by the client's transport.

    The upstream transport is the client's producer (a slow client pauses the upstream
    socket); a client that leaves, a cancel (drain) or ``idle_timeout`` of silence aborts
    the upstream; an upstream lost mid-body aborts the client. ``done`` fires at the end.
    """

    def __init__(self, request: Request, clock: IReactorTime, idle_timeout: float | None):
        self._request = request
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._idle: IDelayedCall | None = None
        self._over = False
        self.done: defer.Deferred[None] = defer.Deferred(lambda _: self._abort_both())
        request.notifyFinish().addErrback(lambda _: self._abort_upstream())

    def connectionMade(self) -> None:
        self._request.registerProducer(cast(IPushProducer, self.transport), True)
        self._arm()

    def dataReceived(self, data: bytes) -> None:
        if not self._over:
            self._request.write(data)
            self._arm()

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        if self._over:
            return
        self._end()
        self._request.unregisterProducer()
        if reason.check(ResponseDone, PotentialDataLoss):
            self._request.finish()
        else:
            self._abort_client()
        self.done.callback(None)

    def _abort_client(self) -> None:
        # No honest ending is left for a raw body cut short: the client must see the cut.
        abort = getattr(self._request.transport, "abortConnection", None)
        if abort is not None:
            abort()

    def _arm(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        if self._idle_timeout:
            self._idle = self._clock.callLater(self._idle_timeout, self._abort_both)

    def _end(self) -> None:
        self._over = True
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None

    def _abort_upstream(self) -> None:
        if not self._over:
            self._end()
            abort_body_transport(self.transport)
            if not self.done.called:
                self.done.callback(None)

    def _abort_both(self) -> None:
        if not self._over:
            self._abort_upstream()
            self._abort_client()
