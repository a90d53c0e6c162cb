"""Streaming HTTP client that judges how a response ended.

``stream_request`` POSTs a JSON body (OpenAI ``/v1/chat/completions``,
``/v1/completions``, llama-server ``/completion`` or any other SSE endpoint) with
treq, decodes the Server-Sent Events incrementally as bytes arrive
(``server_core.sse.SseDecoder``), timestamps them and classifies the end of the
response into one ``outcome``:

``done``           ``[DONE]`` seen (SSE) or a complete JSON body (non-stream)
``error_event``    an SSE error event (``data: {"error": ...}`` or the legacy
                   ``error: {...}`` line), or a 200 JSON body carrying ``"error"``
``http_error``     a non-2xx status (error body read and parsed)
``truncated``      the response ended without any of the above (clean close or
                   reset before ``[DONE]``, broken JSON body, no response at all)
``timeout``        the total or idle timeout expired first (connection aborted)
``connect_error``  no connection could be made
``disconnected``   the client left on purpose (``disconnect_after``)

Tests, the chaos runner and the benchmarks use it, so it keeps per-event work small:
one decoder pass, one ``json.loads`` per data event, and no buffering of SSE bodies.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from treq.client import HTTPClient
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    ResponseDone,
    ResponseFailed,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from server_core.sse import Comment, Event, SseDecoder

__all__ = [
    "CONNECT_ERROR",
    "DISCONNECTED",
    "DONE",
    "ERROR_EVENT",
    "HTTP_ERROR",
    "OUTCOMES",
    "TIMEOUT",
    "TRUNCATED",
    "StreamResult",
    "chat",
    "completions",
    "stream_request",
]

DONE = "done"
ERROR_EVENT = "error_event"
HTTP_ERROR = "http_error"
TRUNCATED = "truncated"
TIMEOUT = "timeout"
CONNECT_ERROR = "connect_error"
DISCONNECTED = "disconnected"
OUTCOMES = frozenset(
    {DONE, ERROR_EVENT, HTTP_ERROR, TRUNCATED, TIMEOUT, CONNECT_ERROR, DISCONNECTED}
)

# end_reason values: how the body (or the attempt) ended at the transport level.
END_COMPLETE = "complete"  # body framing finished (Content-Length / last chunk)
END_CLOSED = "closed"  # close-delimited body ended by a close (PotentialDataLoss)
END_LOST = "lost"  # connection lost or reset before the body framing finished
END_TIMEOUT = "timeout"  # total timeout expired, we aborted
END_IDLE_TIMEOUT = "idle_timeout"  # nothing arrived for idle_timeout seconds, we aborted
END_CLIENT_ABORT = "client_abort"  # disconnect_after reached, we aborted
END_NO_RESPONSE = "no_response"  # connected, but the connection died before headers
END_CONNECT_FAILED = "connect_failed"  # never connected

DEFAULT_BODY_LIMIT = 1 << 20

_CONNECT_FAILURES = (ierror.ConnectError, ierror.DNSLookupError, SchemeNotSupported)
_STREAM_KWARGS = frozenset(
    {
        "headers",
        "timeout",
        "idle_timeout",
        "reactor",
        "pool",
        "max_events",
        "disconnect_after",
        "body_limit",
        "clock",
        "on_event",
        "method",
    }
)


@dataclass(eq=False)
class StreamResult:
    """Everything observed about one response. Times are seconds on one clock."""

    outcome: str = TRUNCATED
    status: int | None = None
    headers: dict[str, list[str]] = field(default_factory=dict)
    # Decoded SSE events (comments excluded), [DONE] and error frames included.
    events: list[Event] = field(default_factory=list)
    event_times: list[float] = field(default_factory=list)  # arrival time of events[i]
    n_events: int = 0  # all events seen, also those beyond max_events
    comments: int = 0
    body: bytes | None = None  # non-SSE bodies only (capped at body_limit)
    error: dict[str, Any] | None = None
    chunks: list[dict[str, Any]] = field(default_factory=list)
    json_body: Any = None  # parsed non-stream body
    text: str = ""
    reasoning: str = ""  # choices[0].delta.reasoning_content (reasoning models)
    finish_reason: str | None = None
    model: str | None = None
    ids: set[str] = field(default_factory=set)
    usage: dict[str, Any] | None = None
    t_start: float = 0.0
    t_headers: float | None = None
    t_first_byte: float | None = None
    t_first_token: float | None = None
    t_end: float | None = None
    gaps: list[float] = field(default_factory=list)
    bytes_received: int = 0
    after_done: bool = False  # anything arrived after [DONE] (violation)
    done_after_error: bool = False  # [DONE] after an error event (legacy dialect)
    after_error: bool = False  # another data event after an error event (violation)
    invalid_json: int = 0  # data events that are not a JSON object
    end_reason: str | None = None  # see END_* constants
    exception: str | None = None  # short description of a transport failure

    @property
    def ok(self) -> bool:
        return self.outcome == DONE

    @property
    def is_sse(self) -> bool:
        ctype = self.headers.get("content-type", [""])[-1]
        return ctype.split(";", 1)[0].strip().lower() == "text/event-stream"

    @property
    def ttfb(self) -> float | None:
        """Request start to the first body byte."""
        return None if self.t_first_byte is None else self.t_first_byte - self.t_start

    @property
    def ttft(self) -> float | None:
        """Request start to the first chunk carrying non-empty text (or reasoning)."""
        return None if self.t_first_token is None else self.t_first_token - self.t_start

    @property
    def header_latency(self) -> float | None:
        return None if self.t_headers is None else self.t_headers - self.t_start

    @property
    def duration(self) -> float | None:
        return None if self.t_end is None else self.t_end - self.t_start

    @property
    def max_gap(self) -> float | None:
        return max(self.gaps) if self.gaps else None

    def summary(self) -> dict[str, Any]:
        """A compact JSON-serialisable view for reports."""

        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 6)

        err = None
        if self.error is not None:
            err = {k: self.error.get(k) for k in ("code", "type", "message") if k in self.error}
        return {
            "outcome": self.outcome,
            "status": self.status,
            "end_reason": self.end_reason,
            "events": self.n_events,
            "comments": self.comments,
            "chunks": len(self.chunks),
            "text_len": len(self.text),
            "finish_reason": self.finish_reason,
            "model": self.model,
            "ids": len(self.ids),
            "ttfb": r(self.ttfb),
            "ttft": r(self.ttft),
            "duration": r(self.duration),
            "max_gap": r(self.max_gap),
            "bytes": self.bytes_received,
            "after_done": self.after_done,
            "done_after_error": self.done_after_error,
            "after_error": self.after_error,
            "invalid_json": self.invalid_json,
            "error": err,
            "exception": self.exception,
        }


def _normalise_error(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        return {"message": value}
    return {"message": json.dumps(value)}


def _parse_legacy_error(raw: str) -> dict[str, Any]:
    """The value of llama-server's old ``error: {...}`` line."""
    try:
        value = json.loads(raw)
    except ValueError:
        return {"message": raw}
    if isinstance(value, dict) and isinstance(value.get("error"), dict):
        return value["error"]
    return _normalise_error(value)


def _error_from_body(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if isinstance(value, dict):
        if "error" in value:
            return _normalise_error(value["error"])
        return value
    return None


def _describe(failure: Failure) -> str:
    exc = failure.value
    name = type(exc).__name__
    reasons = getattr(exc, "reasons", None)
    if isinstance(reasons, list) and reasons:
        inner = ", ".join(
            type(f.value).__name__ if isinstance(f, Failure) else type(f).__name__ for f in reasons
        )
        return f"{name}: {inner}"
    text = str(exc)
    return f"{name}: {text}" if text else name


def _abort(transport: Any) -> None:
    """Drop the connection carrying a response body at once.

    The body protocol only sees Twisted's ``TransportProxyProducer``, whose public
    ``loseConnection`` waits for the write buffer; reach the real TCP transport for
    ``abortConnection`` when it is there, otherwise fall back to the public call.
    """
    inner = getattr(transport, "_producer", None)
    abort = getattr(inner, "abortConnection", None)
    if abort is not None:
        abort()
    elif hasattr(transport, "loseConnection"):
        transport.loseConnection()
    elif transport is not None:
        transport.stopProducing()


class _BodyReceiver(Protocol):
    """Hands response body bytes and the end of the body to the call as they come."""

    def __init__(self, call: _Call) -> None:
        self._call = call

    def connectionMade(self) -> None:
        self._call.body_transport = self.transport

    def dataReceived(self, data: bytes) -> None:
        self._call.on_data(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._call.on_body_end(reason)


class _Call:
    """State of one request; ``stream_request`` is a thin wrapper around ``run``."""

    def __init__(
        self,
        reactor: Any,
        now: Callable[[], float],
        max_events: int | None,
        disconnect_after: int | None,
        body_limit: int,
        listener: Callable[[Event, float], None] | None,
    ) -> None:
        self.listener = listener
        self.listener_failure: Failure | None = None
        self.reactor = reactor
        self.now = now
        self.max_events = max_events
        self.disconnect_after = disconnect_after
        self.body_limit = body_limit
        self.r = StreamResult()
        self.decoder: SseDecoder | None = None
        self.body_buf = bytearray()
        self.body_transport: Any = None
        self.request_d: Deferred[Any] | None = None
        self.finished: Deferred[None] | None = None
        self.closed = False  # result decided; ignore anything that still arrives
        self.done_seen = False
        self.error_seen = False
        self.last_event_t: float | None = None
        self.pieces: list[str] = []
        self.thoughts: list[str] = []
        self.http_error = False
        self.total_call: IDelayedCall | None = None
        self.idle_call: IDelayedCall | None = None
        self.idle_timeout: float | None = None

    # -- timers -------------------------------------------------------------

    def start_timers(self, timeout: float, idle_timeout: float | None) -> None:
        self.total_call = self.reactor.callLater(timeout, self.stop, END_TIMEOUT)
        if idle_timeout is not None:
            self.idle_timeout = idle_timeout
            self.idle_call = self.reactor.callLater(idle_timeout, self.stop, END_IDLE_TIMEOUT)

    def touch(self) -> None:
        if self.idle_call is not None and self.idle_call.active():
            assert self.idle_timeout is not None
            self.idle_call.reset(self.idle_timeout)

    def cancel_timers(self) -> None:
        for call in (self.total_call, self.idle_call):
            if call is not None and call.active():
                call.cancel()

    # -- ending -------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Give up on the response (timeout or client leaving) and drop the connection."""
        if self.closed or self.r.end_reason is not None:
            return
        self.r.end_reason = reason
        if self.finished is not None:
            # Body in progress: decide now, the socket closes on the next turn.
            self.closed = True
            if self.decoder is not None and self.done_seen and self.decoder.buffered:
                self.r.after_done = True
            _abort(self.body_transport)
            self.cancel_timers()
            d, self.finished = self.finished, None
            d.callback(None)
        elif self.request_d is not None:
            # Waiting for headers: cancelling aborts the connection (or the connect).
            self.request_d.cancel()

    def on_body_end(self, reason: Failure) -> None:
        if self.closed:
            return
        self.closed = True
        if reason.check(ResponseDone):
            self.r.end_reason = END_COMPLETE
        elif reason.check(PotentialDataLoss):
            self.r.end_reason = END_CLOSED
        else:
            self.r.end_reason = END_LOST
            self.r.exception = _describe(reason)
        if self.decoder is not None:
            if self.done_seen and self.decoder.buffered:
                self.r.after_done = True
            self.decoder.finish()
        if self.finished is not None:
            d, self.finished = self.finished, None
            d.callback(None)

    def cancel_body(self, d: Deferred[None]) -> None:
        """The caller cancelled us while reading the body: leave at once."""
        self.finished = None
        self.closed = True
        self.r.end_reason = END_CLIENT_ABORT
        _abort(self.body_transport)

    # -- headers and body ---------------------------------------------------

    def on_headers(self, response: IResponse) -> None:
        r = self.r
        r.t_headers = self.now()
        r.status = response.code
        r.headers = {
            k.decode("latin-1").lower(): [v.decode("latin-1") for v in vs]
            for k, vs in response.headers.getAllRawHeaders()
        }
        self.touch()
        self.http_error = not 200 <= response.code < 300
        if not self.http_error and r.is_sse:
            self.decoder = SseDecoder()

    def on_data(self, data: bytes) -> None:
        if self.closed:
            return
        r = self.r
        t = self.now()
        if r.t_first_byte is None:
            r.t_first_byte = t
        r.bytes_received += len(data)
        self.touch()
        if self.decoder is None:
            room = self.body_limit - len(self.body_buf)
            if room > 0:
                self.body_buf += data[:room]
            return
        try:
            items = self.decoder.feed(data)
        except ValueError as exc:  # an overlong line: not a stream we can follow
            r.exception = f"ValueError: {exc}"
            self.stop(END_LOST)
            return
        for item in items:
            if self.closed:  # a callback (on_event, a cancel) ended the call
                return
            if isinstance(item, Comment):
                r.comments += 1
                if self.done_seen:
                    r.after_done = True
                continue
            self.on_event(item, t)
            if self.listener is not None:
                try:
                    self.listener(item, t)
                except Exception:
                    # A bug in the caller's callback must not pass for a broken stream.
                    self.listener_failure = Failure()
                    self.stop(END_CLIENT_ABORT)
                    return
            if self.disconnect_after is not None and r.n_events >= self.disconnect_after:
                self.stop(END_CLIENT_ABORT)
                return

    def on_event(self, ev: Event, t: float) -> None:
        r = self.r
        r.n_events += 1
        keep = self.max_events is None or len(r.events) < self.max_events
        if keep:
            r.events.append(ev)
            r.event_times.append(t)
        if self.last_event_t is not None:
            r.gaps.append(t - self.last_event_t)
        self.last_event_t = t
        if self.done_seen:
            r.after_done = True
            return
        if ev.is_done:
            self.done_seen = True
            if self.error_seen:
                r.done_after_error = True
            return
        if self.error_seen:
            r.after_error = True
        legacy = ev.get("error")
        if legacy is not None:
            self.set_error(_parse_legacy_error(legacy))
            return
        if ev.data is None:
            return
        try:
            obj = json.loads(ev.data)
        except ValueError:
            r.invalid_json += 1
            return
        if not isinstance(obj, dict):
            r.invalid_json += 1
            return
        if "error" in obj:
            self.set_error(_normalise_error(obj["error"]))
            return
        if keep:
            r.chunks.append(obj)
        self.absorb(obj, t, stream=True)

    def set_error(self, err: dict[str, Any]) -> None:
        if not self.error_seen:
            self.error_seen = True
            self.r.error = err

    def absorb(self, obj: dict[str, Any], t: float, *, stream: bool) -> None:
        """Pick text, finish reason, model, id and usage out of one chunk or body."""
        r = self.r
        cid = obj.get("id")
        if isinstance(cid, str):
            r.ids.add(cid)
        if r.model is None and isinstance(obj.get("model"), str):
            r.model = obj["model"]
        usage = obj.get("usage")
        if isinstance(usage, dict):
            r.usage = usage
        piece: Any = None
        thought: Any = None
        choices = obj.get("choices")
        if isinstance(choices, list):
            if choices and isinstance(choices[0], dict):
                c0 = choices[0]
                holder = c0.get("delta" if stream else "message")
                if isinstance(holder, dict):
                    piece = holder.get("content")
                    thought = holder.get("reasoning_content")
                else:
                    piece = c0.get("text")
                reason = c0.get("finish_reason")
                if isinstance(reason, str):
                    r.finish_reason = reason
        elif "content" in obj:  # llama-server native /completion
            piece = obj.get("content")
            if obj.get("stop") is True:
                stop_type = obj.get("stop_type")
                mapped = {"eos": "stop", "word": "stop", "limit": "length"}
                if isinstance(stop_type, str):
                    r.finish_reason = mapped.get(stop_type, stop_type)
        if isinstance(thought, str) and thought:
            self.thoughts.append(thought)
            if r.t_first_token is None:
                r.t_first_token = t
        if isinstance(piece, str) and piece:
            self.pieces.append(piece)
            if r.t_first_token is None:
                r.t_first_token = t

    # -- classification -----------------------------------------------------

    def classify(self) -> str:
        r = self.r
        if self.http_error:
            if self.body_buf:
                r.body = bytes(self.body_buf)
                r.error = _error_from_body(r.body)
            return HTTP_ERROR
        aborted = {
            END_TIMEOUT: TIMEOUT,
            END_IDLE_TIMEOUT: TIMEOUT,
            END_CLIENT_ABORT: DISCONNECTED,
        }
        if self.decoder is not None:
            if self.error_seen:
                return ERROR_EVENT
            if self.done_seen:
                return DONE
            return aborted.get(r.end_reason or "", TRUNCATED)
        r.body = bytes(self.body_buf)
        if r.end_reason in aborted:
            return aborted[r.end_reason or ""]
        if r.end_reason == END_LOST:
            return TRUNCATED
        if r.bytes_received > self.body_limit:
            r.exception = f"body larger than body_limit ({self.body_limit} bytes)"
            return TRUNCATED
        try:
            obj = json.loads(r.body)
        except ValueError:
            r.exception = r.exception or "invalid JSON body"
            return TRUNCATED
        r.json_body = obj
        if isinstance(obj, dict):
            if "error" in obj:
                self.set_error(_normalise_error(obj["error"]))
                return ERROR_EVENT
            self.absorb(obj, r.t_first_byte or self.now(), stream=False)
        return DONE

    def fail_request(self, failure: Failure) -> None:
        """The request failed before any response headers."""
        r = self.r
        if r.end_reason in (END_TIMEOUT, END_IDLE_TIMEOUT):
            r.outcome = TIMEOUT
            return
        if failure.check(*_CONNECT_FAILURES):
            r.outcome = CONNECT_ERROR
            r.end_reason = END_CONNECT_FAILED
        elif failure.check(ResponseFailed, ierror.ConnectionLost, ierror.ConnectionDone):
            # Includes ResponseNeverReceived: connected, then dropped before headers.
            r.outcome = TRUNCATED
            r.end_reason = END_NO_RESPONSE
        else:
            # RequestTransmissionFailed & co: the request never fully left.
            r.outcome = TRUNCATED
            r.end_reason = END_NO_RESPONSE
        r.exception = _describe(failure)

    # -- driver -------------------------------------------------------------

    async def run(
        self,
        method: str,
        url: str,
        payload: bytes | None,
        headers: Headers,
        pool: HTTPConnectionPool | None,
        timeout: float,
        idle_timeout: float | None,
    ) -> StreamResult:
        if pool is None:
            pool = HTTPConnectionPool(self.reactor, persistent=False)
        http = HTTPClient(Agent(self.reactor, pool=pool))
        r = self.r
        r.t_start = self.now()
        self.start_timers(timeout, idle_timeout)
        try:
            self.request_d = http.request(
                method,
                url,
                data=payload,
                headers=headers,
                unbuffered=True,
                allow_redirects=False,
            )
            try:
                response = await self.request_d
            except CancelledError:
                if r.end_reason is None:
                    raise  # the caller cancelled us
                self.fail_request(Failure())
                r.t_end = self.now()
                return r
            except Exception:
                self.fail_request(Failure())
                r.t_end = self.now()
                return r
            self.request_d = None
            self.on_headers(response)
            self.finished = Deferred(self.cancel_body)
            response.deliverBody(_BodyReceiver(self))
            if self.finished is not None:
                await self.finished
            if self.listener_failure is not None:
                self.listener_failure.raiseException()
            r.t_end = self.now()
            r.outcome = self.classify()
            r.text = "".join(self.pieces)
            r.reasoning = "".join(self.thoughts)
            return r
        finally:
            self.cancel_timers()


def _encode_body(body: dict[str, Any] | bytes) -> bytes:
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


async def stream_request(
    url: str,
    body: dict[str, Any] | bytes | None,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
    idle_timeout: float | None = None,
    reactor: Any = None,
    pool: HTTPConnectionPool | None = None,
    max_events: int | None = None,
    disconnect_after: int | None = None,
    body_limit: int = DEFAULT_BODY_LIMIT,
    clock: Callable[[], float] | None = None,
    on_event: Callable[[Event, float], None] | None = None,
) -> StreamResult:
    """POST ``body`` (a dict is sent as JSON) to ``url`` and follow the response to its end.

    ``timeout`` bounds the whole exchange, ``idle_timeout`` the silence between
    any two arrivals (headers or body bytes; SSE comments count as arrivals).
    ``max_events`` caps how many events/chunks are *stored* (all are still counted,
    classified and timed). ``disconnect_after=N`` aborts the connection after the
    N-th event (outcome ``disconnected`` unless ``[DONE]``/an error was already seen).
    ``on_event(event, t)`` is called for every event as it arrives (after it was
    recorded), e.g. to print progress or to act in the middle of a stream; if it
    raises, the connection is aborted and the exception propagates from here.
    ``clock`` defaults to the injected reactor's ``seconds`` or ``time.monotonic``.
    Cancelling the returned coroutine's Deferred aborts the connection and raises
    ``CancelledError``.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
        now = clock or time.monotonic
    else:
        now = clock or reactor.seconds
    send_headers = Headers()
    if body is not None:
        send_headers.setRawHeaders("Content-Type", ["application/json"])
    for name, value in (headers or {}).items():
        send_headers.setRawHeaders(name, [value])  # case-insensitive: may override
    call = _Call(reactor, now, max_events, disconnect_after, body_limit, on_event)
    payload = None if body is None else _encode_body(body)
    return await call.run(method, url, payload, send_headers, pool, timeout, idle_timeout)


def _split_kwargs(kw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    client_kw = {k: v for k, v in kw.items() if k in _STREAM_KWARGS}
    body_kw = {k: v for k, v in kw.items() if k not in _STREAM_KWARGS}
    return client_kw, body_kw


def _endpoint(url_base: str, path: str) -> str:
    base = url_base.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return f"{base}{path}"


async def chat(
    url_base: str,
    model: str,
    messages: list[dict[str, Any]],
    stream: bool = True,
    **kw: Any,
) -> StreamResult:
    """POST to ``{url_base}/v1/chat/completions``.

    Keyword arguments of ``stream_request`` (timeout, headers, ...) go to the
    client; every other keyword (max_tokens, stream_options, ...) goes into the body.
    """
    client_kw, body_kw = _split_kwargs(kw)
    body = {"model": model, "messages": messages, "stream": stream, **body_kw}
    return await stream_request(_endpoint(url_base, "/v1/chat/completions"), body, **client_kw)


async def completions(
    url_base: str,
    model: str,
    prompt: str,
    stream: bool = True,
    **kw: Any,
) -> StreamResult:
    """POST to ``{url_base}/v1/completions``; keywords split as in ``chat``."""
    client_kw, body_kw = _split_kwargs(kw)
    body = {"model": model, "prompt": prompt, "stream": stream, **body_kw}
    return await stream_request(_endpoint(url_base, "/v1/completions"), body, **client_kw)
