"""Deciding the outcome: from what the body said and how the transport ended.

The outcomes (the first matching rule wins; docs/client.md has the full table):

``done``           the dialect's complete ending seen (SSE: ``[DONE]`` for chat and
                   completions, ``response.completed``, ``message_stop``, native's
                   ``"stop": true``) or a complete JSON body (non-stream)
``error_event``    the dialect's SSE error event (``data: {"error": ...}``, an
                   ``event: error``, the legacy ``error: {...}`` line), or a 200 JSON
                   body carrying ``"error"``
``final_event``    the dialect's honest ending that is no success (Responses
                   ``response.failed`` / ``response.incomplete``)
``http_error``     a non-2xx status (error body read and parsed)
``truncated``      the response ended without any of the above (clean close or
                   reset before ``[DONE]``, broken JSON body, no response at all)
``timeout``        the total or idle timeout expired first (connection aborted)
``connect_error``  no connection could be made
``disconnected``   the client left on purpose (``disconnect_after``)

``classify`` runs once per response, when its body is over or abandoned;
``classify_failure`` when the request failed before any response headers;
``body_end_reason`` names how a body ended.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from twisted.internet import error as ierror
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.error import SchemeNotSupported
from twisted.web.http import PotentialDataLoss

from harness.client._body import BodyState
from harness.client._errors import error_from_body, normalise_error
from harness.client._result import (
    CONNECT_ERROR,
    DISCONNECTED,
    DONE,
    END_CLIENT_ABORT,
    END_CLOSED,
    END_COMPLETE,
    END_CONNECT_FAILED,
    END_IDLE_TIMEOUT,
    END_LOST,
    END_NO_RESPONSE,
    END_TIMEOUT,
    ERROR_EVENT,
    FINAL_EVENT,
    HTTP_ERROR,
    TIMEOUT,
    TRUNCATED,
    StreamResult,
)

__all__ = ["body_end_reason", "classify", "classify_failure", "describe"]

_CONNECT_FAILURES = (ierror.ConnectError, ierror.DNSLookupError, SchemeNotSupported)
# We left on purpose: the outcome says why, unless the body had already said more.
_ABORTED = {END_TIMEOUT: TIMEOUT, END_IDLE_TIMEOUT: TIMEOUT, END_CLIENT_ABORT: DISCONNECTED}


def describe(failure: Failure) -> str:
    """A one-line description of a transport failure (never a traceback)."""
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


def body_end_reason(reason: Failure) -> str:
    """The ``end_reason`` of a body that ended on its own with ``reason``."""
    if reason.check(ResponseDone):
        return END_COMPLETE
    if reason.check(PotentialDataLoss):
        return END_CLOSED
    return END_LOST


def classify(body: BodyState, now: Callable[[], float]) -> str:
    """The outcome of a response whose headers arrived; fills ``body``/``error`` on the way."""
    if body.http_error:
        return _http_error(body)
    if body.decoder is not None:
        return _sse_outcome(body)
    return _json_outcome(body, now)


def classify_failure(r: StreamResult, failure: Failure) -> None:
    """Record the outcome of a request that failed before any response headers."""
    if r.end_reason in (END_TIMEOUT, END_IDLE_TIMEOUT):
        r.outcome = TIMEOUT
        return
    if failure.check(*_CONNECT_FAILURES):
        r.outcome = CONNECT_ERROR
        r.end_reason = END_CONNECT_FAILED
    else:
        # ResponseFailed / ResponseNeverReceived (connected, then dropped before headers)
        # and RequestTransmissionFailed & co (the request never fully left) alike.
        r.outcome = TRUNCATED
        r.end_reason = END_NO_RESPONSE
    r.exception = describe(failure)


def _http_error(body: BodyState) -> str:
    # The status decides, even if the error body itself was cut or hung.
    r = body.result
    if body.buf:
        r.body = bytes(body.buf)
        r.error = error_from_body(r.body)
    return HTTP_ERROR


def _sse_outcome(body: BodyState) -> str:
    if body.error_seen:
        return ERROR_EVENT
    if body.done_seen:
        return FINAL_EVENT if body.final_seen else DONE
    return _ABORTED.get(body.result.end_reason or "", TRUNCATED)


def _json_outcome(body: BodyState, now: Callable[[], float]) -> str:
    r = body.result
    r.body = bytes(body.buf)
    if r.end_reason in _ABORTED:
        return _ABORTED[r.end_reason or ""]
    if r.end_reason == END_LOST:
        return TRUNCATED
    if r.bytes_received > body.body_limit:
        r.exception = f"body larger than body_limit ({body.body_limit} bytes)"
        return TRUNCATED
    try:
        obj = json.loads(r.body)
    except ValueError:
        r.exception = r.exception or "invalid JSON body"
        return TRUNCATED
    r.json_body = obj
    if isinstance(obj, dict):
        if "error" in obj:
            body.set_error(normalise_error(obj["error"]))
            return ERROR_EVENT
        body.transcript.absorb(obj, r.t_first_byte or now(), stream=False)
    return DONE
