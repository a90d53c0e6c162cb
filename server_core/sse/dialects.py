"""Stream dialects: what a complete ending is, which frames end honestly, the error on loss.

Every stream server_core relays ends in one of three honest ways: complete, an HTTP error
before the first byte, or one error event and close. What "complete" and "one error
event" look like depends on the API the client speaks, so each is one ``StreamDialect``:

=============  ===============================  ==========================  =================
dialect        complete ending                  other honest endings         error on loss
=============  ===============================  ==========================  =================
``chat``       ``data: [DONE]``                 an upstream error event      ``data: {"error"}``
``responses``  ``response.completed``           ``response.failed``,         ``event: error``,
                                                ``response.incomplete``      Responses shape
``messages``   ``message_stop``                 an upstream error event      ``event: error``,
                                                                             Anthropic shape
``native``     the event with ``"stop": true``  an upstream error event      ``data: {"error"}``
=============  ===============================  ==========================  =================

``chat`` covers OpenAI chat and text completions. Upstream error events (llama-server's
``data: {"error": ...}``, the legacy ``error:`` field, an ``event: error``) are *read* as
errors and replaced by the dialect's own error event, so a client sees one shape whatever
the upstream sent. Pure (no I/O, no Twisted): ``ForwardedSse``, the harness's stream client
and its chaos judge all read streams through these definitions.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server_core.sse.codec import DONE, Event, encode_comment, encode_event

__all__ = [
    "CHAT",
    "DIALECTS",
    "MESSAGES",
    "NATIVE",
    "RESPONSES",
    "Frame",
    "StreamDialect",
    "anthropic_error",
    "anthropic_error_type",
    "dialect_for_path",
    "dialect_named",
]


class Frame(enum.Enum):
    """What one upstream event means for the stream it belongs to."""

    SKIP = "skip"  # no data (a bare ``event:`` or ``id:`` line): nothing to relay
    DATA = "data"  # an ordinary event: relay it
    COMPLETE = "complete"  # the complete ending: relay it, then end
    FINAL = "final"  # an honest ending that is not a success: relay it, then end
    ERROR = "error"  # an upstream error: replaced by the dialect's own error event
    MALFORMED = "malformed"  # data that is not JSON: the stream is broken


_KEEPALIVE = encode_comment("keep-alive")


def _openai_error(message: str, type: str, code: str | None, param: str | None, seq: int) -> bytes:
    error = {"message": message, "type": type, "param": param, "code": code}
    return encode_event(json.dumps({"error": error}, ensure_ascii=False))


def _responses_error(
    message: str, type: str, code: str | None, param: str | None, seq: int
) -> bytes:
    # The Responses API's own error event: flat, with the code the error carries.
    payload = {
        "type": "error",
        "code": code or type,
        "message": message,
        "param": param,
        "sequence_number": seq,
    }
    return encode_event(json.dumps(payload, ensure_ascii=False), event="error")


def anthropic_error_type(openai_type: str | None, status: int | None = None) -> str:
    """The Anthropic error ``type`` for one of ours (by status where one was sent)."""
    by_status = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        503: "overloaded_error",
        529: "overloaded_error",
    }
    if status is not None and status in by_status:
        return by_status[status]
    if openai_type in ("invalid_request_error", "authentication_error", "not_found_error"):
        return openai_type
    return "api_error"


def anthropic_error(message: str, type: str | None, status: int | None = None) -> dict[str, Any]:
    """An error in the Anthropic Messages API's shape (its body and its error event)."""
    error = {"type": anthropic_error_type(type, status), "message": message}
    return {"type": "error", "error": error}


def _messages_error(
    message: str, type: str, code: str | None, param: str | None, seq: int
) -> bytes:
    payload = anthropic_error(message, type)
    return encode_event(json.dumps(payload, ensure_ascii=False), event="error")


def _name(event: Event, payload: object) -> str | None:
    """The event's name: its ``event:`` field, else the payload's ``type``."""
    if event.event:
        return event.event
    if isinstance(payload, dict):
        kind = payload.get("type")
        return kind if isinstance(kind, str) else None
    return None


def _is_error_payload(payload: object) -> bool:
    # llama-server's mid-stream error (and OpenAI's chat one): a top-level "error" member.
    return isinstance(payload, dict) and payload.get("error") is not None


def _chat_kind(event: Event, payload: object) -> Frame:
    return Frame.ERROR if _is_error_payload(payload) else Frame.DATA


def _native_kind(event: Event, payload: object) -> Frame:
    if _is_error_payload(payload):
        return Frame.ERROR
    if isinstance(payload, dict) and payload.get("stop") is True:
        return Frame.COMPLETE
    return Frame.DATA


_RESPONSES_FINAL = frozenset({"response.failed", "response.incomplete"})


def _responses_kind(event: Event, payload: object) -> Frame:
    name = _name(event, payload)
    if name == "response.completed":
        return Frame.COMPLETE
    if name in _RESPONSES_FINAL:
        return Frame.FINAL
    if name == "error" or (name is None and _is_error_payload(payload)):
        return Frame.ERROR
    return Frame.DATA


def _messages_kind(event: Event, payload: object) -> Frame:
    name = _name(event, payload)
    if name == "message_stop":
        return Frame.COMPLETE
    if name == "error" or (name is None and _is_error_payload(payload)):
        return Frame.ERROR
    return Frame.DATA


ErrorFrame = Callable[[str, str, "str | None", "str | None", int], bytes]


@dataclass(frozen=True)
class StreamDialect:
    """One API's stream rules (see the module doc for the table)."""

    name: str
    kind: Callable[[Event, object], Frame]
    """What an event whose data parsed as ``payload`` means (``_kind`` functions above)."""
    write_error: ErrorFrame
    """The one error frame: ``(message, type, code, param, sequence_number) -> bytes``."""
    done_data: str | None = None
    """Data that completes the stream without being JSON (OpenAI's ``[DONE]``)."""
    keepalive: bytes = _KEEPALIVE
    """The frame written during upstream silence."""

    def read(self, event: Event) -> tuple[Frame, Any]:
        """What ``event`` means, and its payload (parsed JSON; the raw text when not JSON).

        The legacy llama-server ``error:`` field is an error in every dialect.
        """
        legacy = event.get("error")
        if legacy is not None:
            return Frame.ERROR, _json_or_text(legacy)
        data = event.data
        if data is None:
            return Frame.SKIP, None
        if self.done_data is not None and data == self.done_data:
            return Frame.COMPLETE, None
        try:
            payload = json.loads(data)
        except ValueError:
            if event.event == "error":
                return Frame.ERROR, data  # an error whose text is not JSON is still an error
            return Frame.MALFORMED, data
        return self.kind(event, payload), payload

    def error_frame(
        self,
        message: str,
        type: str = "server_error",
        code: str | None = None,
        param: str | None = None,
        *,
        sequence_number: int = 0,
    ) -> bytes:
        """The encoded error event that ends a stream of this dialect."""
        return self.write_error(message, type, code, param, sequence_number)

    @property
    def completes_with_marker(self) -> bool:
        """True when the complete ending is a marker (``[DONE]``), not an API event."""
        return self.done_data is not None


def _json_or_text(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _ping() -> bytes:
    return encode_event('{"type": "ping"}', event="ping")


CHAT = StreamDialect("chat", _chat_kind, _openai_error, done_data=DONE)
RESPONSES = StreamDialect("responses", _responses_kind, _responses_error)
MESSAGES = StreamDialect("messages", _messages_kind, _messages_error, keepalive=_ping())
NATIVE = StreamDialect("native", _native_kind, _openai_error)

DIALECTS: dict[str, StreamDialect] = {d.name: d for d in (CHAT, RESPONSES, MESSAGES, NATIVE)}


def dialect_named(name: str) -> StreamDialect:
    """The dialect called ``name`` (``chat``, ``responses``, ``messages``, ``native``)."""
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(f"unknown stream dialect {name!r}; known: {sorted(DIALECTS)}") from None


_BY_PATH = {
    "/v1/chat/completions": CHAT,
    "/chat/completions": CHAT,
    "/v1/completions": CHAT,
    "/v1/responses": RESPONSES,
    "/responses": RESPONSES,
    "/v1/messages": MESSAGES,
    "/completion": NATIVE,
    "/completions": NATIVE,  # llama-server's un-prefixed /completions is its native one
    "/infill": NATIVE,
}


def dialect_for_path(path: str) -> StreamDialect | None:
    """The dialect of the streams a route serves (by llama-server's paths), or None."""
    return _BY_PATH.get(path.split("?", 1)[0].rstrip("/") or "/")
