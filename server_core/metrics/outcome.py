"""How a request ended, in the few words the metrics, the events and the logs use.

Every request that reaches a model ends in exactly one *kind*: ``complete`` (the whole
answer, or a stream's own last event), ``error_event`` (a stream that had to end with one
error event), ``http_error`` (an error status before any byte of an answer) or
``client_gone`` (the client left first). An error event also has a *cause*: what broke
the stream. The causes are read off the error that ended it, so this module needs no
import of the relay: its messages are pinned by the tests.
"""

from __future__ import annotations

__all__ = [
    "CLIENT_GONE",
    "COMPLETE",
    "ENDING_KINDS",
    "ERROR_EVENT",
    "HTTP_ERROR",
    "cause_of",
]

COMPLETE = "complete"
ERROR_EVENT = "error_event"
HTTP_ERROR = "http_error"
CLIENT_GONE = "client_gone"
ENDING_KINDS = (COMPLETE, ERROR_EVENT, HTTP_ERROR, CLIENT_GONE)

# What ForwardedSse says when it ends a stream itself (``_fail``): fragment -> cause.
_RELAY_FAILURES = (
    ("connection lost in the middle of the stream", "upstream_reset"),
    ("closed the stream before it was complete", "upstream_closed"),
    ("sent no data for", "stall"),
    ("malformed event", "malformed"),
    ("oversized SSE event", "malformed"),
)


def cause_of(error: object) -> str:
    """The cause of a stream's error ending, from the error that ended it.

    ``drain`` (the shutdown ended it), ``internal`` (a bug of ours, logged with an id),
    ``upstream_error`` (the upstream sent an error event), or one of the relay's own
    verdicts: ``upstream_reset``, ``upstream_closed``, ``stall``, ``malformed``.
    """
    kind = type(error).__name__
    message = str(getattr(error, "message", "") or "")
    if kind == "InternalError":
        return "internal"
    if kind == "ContextError" and "shutting down" in message:
        return "drain"
    if getattr(error, "code", None) == "upstream_stream_error":
        for fragment, cause in _RELAY_FAILURES:
            if fragment in message:
                return cause
        return "upstream_stream"
    if kind == "UpstreamError":
        return "upstream_error"
    return "other"
