"""Error shapes: whatever a server sent as an error, as one ``dict``.

Servers say "error" in several ways: OpenAI's ``{"error": {...}}`` (in an SSE data event
or a JSON body; Anthropic's ``{"type": "error", "error": {...}}`` too), a flat object in
an ``event: error`` (the Responses API's ``{"type": "error", "code", "message"}``,
llama-server's Anthropic ``{"code", "message", "type"}``), llama-server's legacy
``error: {...}`` SSE line, and a bare string or other JSON value where an object
belongs. ``StreamResult.error`` always gets a dict, so callers compare
``code``/``type``/``message`` without caring which dialect spoke.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["error_from_body", "error_of_event", "normalise_error", "parse_legacy_error"]


def normalise_error(value: Any) -> dict[str, Any]:
    """The value of an ``"error"`` key as a dict; a non-object becomes its ``message``."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        return {"message": value}
    return {"message": json.dumps(value)}


def error_of_event(payload: Any) -> dict[str, Any]:
    """The error object of an SSE error event's payload (parsed JSON, or its raw text)."""
    if isinstance(payload, dict):
        if payload.get("error") is not None:
            return normalise_error(payload["error"])
        return payload  # flat: the event itself is the error
    return normalise_error(payload)


def parse_legacy_error(raw: str) -> dict[str, Any]:
    """The value of llama-server's old ``error: {...}`` line."""
    try:
        value = json.loads(raw)
    except ValueError:
        return {"message": raw}
    if isinstance(value, dict) and isinstance(value.get("error"), dict):
        return value["error"]
    return normalise_error(value)


def error_from_body(body: bytes) -> dict[str, Any] | None:
    """The error object of an HTTP error body, or None if the body is not a JSON object."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if isinstance(value, dict):
        if "error" in value:
            return normalise_error(value["error"])
        return value
    return None
