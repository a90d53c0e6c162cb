"""ForwardedSse: relay an upstream SSE body to the client as it arrives.

Frames are decoded and re-encoded one by one, so every write to the client is a
whole frame and a stream can always be ended honestly. What ends a stream is the
stream's dialect (``dialects``): ``[DONE]`` for OpenAI chat, ``response.completed`` (or
an honest ``response.failed``/``response.incomplete``) for Responses, ``message_stop``
for Anthropic Messages, the event with ``"stop": true`` for llama-server's native
``/completion``. On upstream loss before that ending (reset, clean close, stall,
malformed framing, an upstream error event) the client gets exactly one error event in
the dialect's shape and the connection closes. A slow client pauses the upstream
socket; a client that leaves aborts it at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.python.failure import Failure
from twisted.web.iweb import IResponse
from twisted.web.server import Request
from zope.interface import implementer

from server_core.errors import ServerCoreError, UpstreamError, internal_error, parse_error_object
from server_core.sse.codec import encode_event
from server_core.sse.dialects import CHAT, Frame, StreamDialect
from server_core.sse.upstream_reader import UpstreamSseReader
from server_core.sse.writer import Ending, SseResponse

__all__ = ["ForwardedSse"]


def _error_from_payload(payload: object, upstream: str) -> UpstreamError:
    """An upstream error event (llama-server or OpenAI shape) as our error.

    Mid-stream the status is already sent, so only message, type and code carry over.
    """
    fields = parse_error_object(payload)
    return UpstreamError(
        f"{upstream}: {fields.message or 'error during generation'}",
        type=fields.type or "server_error",
        code=fields.code,
    )


@implementer(IPushProducer)
class ForwardedSse(UpstreamSseReader):
    """Relays one upstream ``text/event-stream`` response to one client request.

    The reading half (pacing, idle clock, the upstream's failures) is
    ``UpstreamSseReader``'s; this class writes what it reads to the client."""

    def __init__(
        self,
        request: Request,
        response: IResponse,
        *,
        clock: IReactorTime,
        upstream_name: str,
        keepalive_interval: float | None = 15.0,
        idle_timeout: float | None = 300.0,
        model_name: str | None = None,
        dialect: StreamDialect = CHAT,
        on_error: Callable[[ServerCoreError, str | None], None] | None = None,
        on_event: Callable[[object], None] | None = None,
    ) -> None:
        self._response = response
        self._dialect = dialect
        self._on_error = on_error
        self._on_event = on_event
        self._model_name = model_name
        self._upstream_name = upstream_name
        self._reader_setup(clock, idle_timeout)
        self._out = SseResponse(
            request,
            clock,
            keepalive_interval=keepalive_interval,
            on_client_gone=self._abort_upstream,
            dialect=dialect,
        )
        self.events_relayed = 0
        self._created: int | None = None

    def relay(self) -> defer.Deferred[Ending]:
        """Start relaying; the Deferred fires with how the response ended."""
        self._out.begin(producer=self)
        self._start_reading(self._response)
        d = self._out.when_ended()
        # A cancelled handler (the client left) must not leave the upstream open.
        d.addErrback(self._cancelled)
        return d

    def _cancelled(self, failure: Failure) -> Failure:
        failure.trap(defer.CancelledError)
        self._abort_upstream()
        return failure

    # -- reading (UpstreamSseReader) ------------------------------------------------------

    @property
    def _open(self) -> bool:
        return self._out.is_open

    def _relay_event(self, item: Any) -> bool:
        """Relay one upstream event; False once the stream has ended."""
        frame, payload = self._dialect.read(item)
        if frame is Frame.SKIP:
            return True
        if frame is Frame.ERROR:
            # Older llama-server sent `error: {...}` then `data: [DONE]`: never relay that [DONE].
            error = _error_from_payload(payload, self._upstream_name)
            self.end_with(error, cause="upstream_error")
            return False
        if frame is Frame.MALFORMED:
            self._fail("sent a malformed event (invalid JSON)", "malformed")
            return False
        data_str = item.data
        if isinstance(payload, dict):
            data_str = self._same_created(payload, data_str)
            data_str = self._same_model(payload, data_str)
        self._out.send(encode_event(data_str, event=item.event, id=item.id))
        if payload is not None:
            self.events_relayed += 1
            if self._on_event is not None:
                self._on_event(payload)  # what the metrics count (gaps, tokens)
        if frame is Frame.COMPLETE or frame is Frame.FINAL:
            self._out.end_done(marker=False)  # that event was the stream's own ending
            self._drain_upstream()
            return False
        return True

    def _same_created(self, payload: dict[str, Any], data_str: str) -> str:
        """One ``created`` per stream, as OpenAI's streams have.

        llama-server stamps each chunk with the current second; clients that key on
        (id, created) would see one completion split in two. Rewriting is a plain string
        replacement in the common compact form, a re-encode only otherwise.
        """
        created = payload.get("created")
        if not isinstance(created, int) or isinstance(created, bool):
            return data_str
        if self._created is None:
            self._created = created
            return data_str
        if created == self._created:
            return data_str
        rewritten = data_str.replace(f'"created":{created}', f'"created":{self._created}', 1)
        if rewritten is data_str or rewritten == data_str:
            payload["created"] = self._created
            rewritten = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        return rewritten

    def _same_model(self, payload: dict[str, Any], data_str: str) -> str:
        """The model the client asked for, not the upstream's own name for it.

        Like ``_same_created``: a plain string replacement of the compact ``"model":...``
        member (it cannot occur inside a string value, whose quotes are escaped), a
        re-encode only when the upstream spaced it differently. Responses and Anthropic
        streams name it one level down, in ``response`` and ``message``.
        """
        wanted = self._model_name
        if wanted is None:
            return data_str
        holder = payload
        for key in ("response", "message"):
            inner = payload.get(key)
            if "model" not in payload and isinstance(inner, dict) and "model" in inner:
                holder = inner
        model = holder.get("model")
        if model is None or model == wanted:
            return data_str
        holder["model"] = wanted
        member = '"model":' + json.dumps(model, ensure_ascii=False)
        if isinstance(model, str) and data_str.count(member) == 1:
            return data_str.replace(member, '"model":' + json.dumps(wanted, ensure_ascii=False))
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))

    # -- endings ------------------------------------------------------------------

    def _internal_failure(self, exc: Exception) -> None:
        # A bug of ours must still end the stream honestly (one error event, logged
        # with an id), never leave it hanging or let Twisted drop the connection.
        self.end_with(internal_error(exc, "ForwardedSse"), cause="internal")

    def _fail(self, what: str, cause: str) -> None:
        error = UpstreamError(f"{self._upstream_name} {what}", code="upstream_stream_error")
        self.end_with(error, cause=cause)

    def end_with(self, error: ServerCoreError, *, cause: str | None = None) -> None:
        """End the stream now with one error event (also used by the drain).

        ``on_error`` hears of it first, with ``cause`` (what broke the stream, when the
        relay itself knows: ``upstream_reset``, ``upstream_closed``, ``stall``,
        ``malformed``, ``upstream_error``, ``internal``), while the response is still open.
        """
        if self._out.is_open and self._on_error is not None:
            on_error, self._on_error = self._on_error, None
            on_error(error, cause)
        self._out.end_error(error)
        self._finish_upstream()

    def _finish_upstream(self) -> None:
        # After an error nothing more from upstream is wanted; free its slot now.
        self._abort_upstream()
