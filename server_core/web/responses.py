"""JSON answers and OpenAI-shaped errors, written the same way by every route."""

from __future__ import annotations

import json
from typing import Any

from twisted.web.server import Request

from server_core.errors import ServerCoreError
from server_core.sse.dialects import anthropic_error

__all__ = ["JSON", "send_error", "send_json", "write_anthropic_error", "write_error"]

JSON = b"application/json"


def send_json(request: Request, payload: Any, status: int = 200) -> bytes:
    """Set the status and content type; the encoded ``payload`` is the body to return."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", JSON)
    return json.dumps(payload).encode("utf-8")


def send_error(request: Request, status: int, body: bytes) -> bytes:
    """An already encoded error body with its status."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", JSON)
    return body


def write_error(request: Request, error: ServerCoreError) -> bytes | None:
    """``error`` as the response, or None when the body has started (its writer ends it)."""
    if request.startedWriting:
        # Too late for a status line; whoever started the body ends it (SseResponse).
        return None
    for name, value in error.headers.items():
        request.setHeader(name.encode("ascii"), value.encode("ascii"))
    return send_error(request, error.status, error.to_json())


def write_anthropic_error(request: Request, error: ServerCoreError) -> bytes | None:
    """``write_error`` in the Anthropic Messages API's error shape (its clients parse that)."""
    if request.startedWriting:
        return None
    for name, value in error.headers.items():
        request.setHeader(name.encode("ascii"), value.encode("ascii"))
    body = anthropic_error(error.message, error.type, error.status)
    return send_error(request, error.status, json.dumps(body).encode("utf-8"))
