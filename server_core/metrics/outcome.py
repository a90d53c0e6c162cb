"""How a request ended, in the few words the metrics, the events and the logs use.

Every request that reaches a model ends in exactly one *kind*: ``complete`` (the whole
answer, or a stream's own last event), ``error_event`` (a stream that had to end with one
error event), ``http_error`` (an error status before any byte of an answer) or
``client_gone`` (the client left first). An error event also has a *cause*: what broke
the stream. The relay names it when it ends a stream itself (``ForwardedSse``'s
``on_error``); an ending from outside the relay (the drain) is read off its error here.
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


def cause_of(error: object) -> str:
    """The cause of an error ending the relay did not name, from the error itself.

    ``drain`` (the shutdown ended it), ``internal`` (a bug of ours, logged with an id),
    ``upstream_error`` (the upstream sent an error event), ``upstream_stream`` (the
    stream broke), else ``other``.
    """
    kind = type(error).__name__
    message = str(getattr(error, "message", "") or "")
    if kind == "InternalError":
        return "internal"
    if kind == "ContextError" and "shutting down" in message:
        return "drain"
    if getattr(error, "code", None) == "upstream_stream_error":
        return "upstream_stream"
    if kind == "UpstreamError":
        return "upstream_error"
    return "other"
