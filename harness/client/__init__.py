"""Streaming HTTP client that judges how a response ended (see docs/client.md).

``stream_request`` sends one request with treq, decodes Server-Sent Events as the bytes
arrive, times every event and settles on one ``outcome`` (``OUTCOMES``), reading the
events by the stream dialect of the request's path (``server_core.sse.dialects``;
``dialect=`` overrides it); ``chat`` and ``completions`` are its OpenAI shorthands.
Tests, the chaos runner and the benchmarks judge streams with it. Inside: ``_result``
(the record and its vocabulary), ``_errors`` (error shapes), ``_chunks`` (text out of
chunks), ``_body`` (event sequencing), ``_classify`` (the verdict), ``_call`` (one
request and its timers), ``_ndjson`` (Ollama's NDJSON lines and their ``OLLAMA``
dialect), ``_request``.
"""

from harness.client._chunks import OLLAMA_TIMINGS
from harness.client._ndjson import NDJSON, OLLAMA, OLLAMA_PATHS, NdjsonDecoder
from harness.client._request import chat, completions, request_dialect, stream_request
from harness.client._result import (
    CONNECT_ERROR,
    DEFAULT_BODY_LIMIT,
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
    OUTCOMES,
    TIMEOUT,
    TRUNCATED,
    StreamResult,
)

__all__ = [
    "CONNECT_ERROR",
    "DEFAULT_BODY_LIMIT",
    "DISCONNECTED",
    "DONE",
    "END_CLIENT_ABORT",
    "END_CLOSED",
    "END_COMPLETE",
    "END_CONNECT_FAILED",
    "END_IDLE_TIMEOUT",
    "END_LOST",
    "END_NO_RESPONSE",
    "END_TIMEOUT",
    "ERROR_EVENT",
    "FINAL_EVENT",
    "HTTP_ERROR",
    "NDJSON",
    "OLLAMA",
    "OLLAMA_PATHS",
    "OLLAMA_TIMINGS",
    "OUTCOMES",
    "TIMEOUT",
    "TRUNCATED",
    "NdjsonDecoder",
    "StreamResult",
    "chat",
    "completions",
    "request_dialect",
    "stream_request",
]
