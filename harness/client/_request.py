"""The public request functions: ``stream_request`` and its OpenAI shorthands.

``stream_request`` turns its arguments into one ``Call`` and runs it; ``chat`` and
``completions`` build the OpenAI body and split their keywords between the client
(the keyword-only parameters of ``stream_request``) and the JSON body (all others).
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers

from harness.client._call import Call
from harness.client._ndjson import OLLAMA, OLLAMA_PATHS
from harness.client._result import DEFAULT_BODY_LIMIT, StreamResult
from server_core.sse import Event
from server_core.sse.dialects import CHAT, StreamDialect, dialect_for_path, dialect_named

__all__ = ["chat", "completions", "request_dialect", "stream_request"]


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
    dialect: StreamDialect | str | None = None,
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
    ``dialect`` (a ``StreamDialect`` or its name) says how the stream ends and fails;
    by default it follows the URL's path (``dialect_for_path``; chat for other paths).
    Cancelling the returned coroutine's Deferred aborts the connection and raises
    ``CancelledError``.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
        now = clock or time.monotonic
    else:
        now = clock or reactor.seconds
    chosen = request_dialect(url, dialect)
    call = Call(reactor, now, max_events, disconnect_after, body_limit, on_event, chosen)
    payload = None if body is None else _encode_body(body)
    send_headers = _request_headers(body is not None, headers or {})
    return await call.run(method, url, payload, send_headers, pool, timeout, idle_timeout)


def request_dialect(url: str, dialect: StreamDialect | str | None = None) -> StreamDialect:
    """The dialect a request to ``url`` is judged by: ``dialect`` if given, else its path's
    (``ollama`` for ``/api/chat`` and ``/api/generate``; chat, the old default, for a
    path no dialect claims). An NDJSON answer is read by ``ollama`` whatever this says."""
    if isinstance(dialect, StreamDialect):
        return dialect
    if dialect == OLLAMA.name:
        return OLLAMA
    if isinstance(dialect, str):
        return dialect_named(dialect)
    path = urlsplit(url).path
    if path.rstrip("/") in OLLAMA_PATHS:
        return OLLAMA
    return dialect_for_path(path) or CHAT


# The keywords of chat/completions that belong to the client, not to the JSON body.
_STREAM_KWARGS = frozenset(
    name
    for name, param in inspect.signature(stream_request).parameters.items()
    if param.kind is inspect.Parameter.KEYWORD_ONLY
)


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


def _encode_body(body: dict[str, Any] | bytes) -> bytes:
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _request_headers(has_body: bool, extra: dict[str, str]) -> Headers:
    send_headers = Headers()
    if has_body:
        send_headers.setRawHeaders("Content-Type", ["application/json"])
    for name, value in extra.items():
        send_headers.setRawHeaders(name, [value])  # case-insensitive: may override
    return send_headers


def _split_kwargs(kw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    client_kw = {k: v for k, v in kw.items() if k in _STREAM_KWARGS}
    body_kw = {k: v for k, v in kw.items() if k not in _STREAM_KWARGS}
    return client_kw, body_kw


def _endpoint(url_base: str, path: str) -> str:
    # url_base may be the server root or its /v1 (with or without a trailing slash).
    base = url_base.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return f"{base}{path}"
