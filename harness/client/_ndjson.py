"""Ollama's streams: NDJSON lines, read one at a time, judged by Ollama's ending rules.

An Ollama stream (``Content-Type: application/x-ndjson``, ``/api/chat`` and
``/api/generate``) is one JSON object per line. It is complete when its last line has
``"done": true`` (with ``done_reason`` and the timing fields); after an upstream loss it
ends with one ``{"error": "..."}`` line and the close, never a ``done: true``. Ollama's
clients parse every line as JSON, so a blank or non-JSON line is a broken stream.

``NdjsonDecoder`` turns the bytes into one ``Event`` per line (``data`` = the line), so
the rest of the client (``BodyState``, the conformance helpers) reads Ollama streams like
any other: through a ``StreamDialect``. ``OLLAMA`` is that dialect (``done: true`` is the
complete ending, an ``"error"`` member the error event). It lives here, not in
``server_core.sse.dialects``: server_core relays Ollama with its own code, and the harness
judges it by the published rules independently.
"""

from __future__ import annotations

import json

from server_core.sse import Comment, Event
from server_core.sse.dialects import Frame, StreamDialect

__all__ = [
    "MAX_LINE",
    "NDJSON",
    "OLLAMA",
    "OLLAMA_PATHS",
    "NdjsonDecoder",
    "is_ndjson",
]

NDJSON = "application/x-ndjson"
MAX_LINE = 1 << 20  # one line over 1 MiB is not a stream we can follow (as for SSE)
# The Ollama routes whose answers are streams (or, with "stream": false, one object).
OLLAMA_PATHS = frozenset({"/api/chat", "/api/generate"})


def is_ndjson(content_type: str) -> bool:
    """Whether a ``Content-Type`` value declares an NDJSON body."""
    return content_type.split(";", 1)[0].strip().lower() == NDJSON


def _ollama_kind(event: Event, payload: object) -> Frame:
    if isinstance(payload, dict):
        if payload.get("error") is not None:
            return Frame.ERROR
        if payload.get("done") is True:
            return Frame.COMPLETE
    return Frame.DATA


def _ollama_error(message: str, type: str, code: str | None, param: str | None, seq: int) -> bytes:
    return json.dumps({"error": message}, ensure_ascii=False).encode("utf-8") + b"\n"


OLLAMA = StreamDialect("ollama", _ollama_kind, _ollama_error, keepalive=b"")
"""Ollama's stream rules: complete = a ``"done": true`` line; error = an ``"error"`` line."""


class NdjsonDecoder:
    """Bytes in, one ``Event`` per complete line out (``\\r\\n`` is read as ``\\n``).

    Mirrors ``SseDecoder``'s interface (``feed``, ``finish``, ``buffered``) so the
    client's body code drives both. An unterminated last line is held in ``buffered``;
    ``finish`` hands it out (Ollama's clients read a last line without its newline too).
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._buf = bytearray()
        self._max_line = max_line

    @property
    def buffered(self) -> int:
        """Bytes held for an unterminated line."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[Event | Comment]:
        """The lines completed by ``chunk``; ValueError for a line over ``max_line``."""
        out: list[Event | Comment] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            self._buf += chunk[start:end]
            out.append(self._line())
            start = end + 1
        self._buf += chunk[start:]
        if len(self._buf) > self._max_line:
            raise ValueError(f"NDJSON line longer than {self._max_line} bytes")
        return out

    def finish(self) -> list[Event | Comment]:
        """End of the body: the unterminated last line, if any."""
        return [self._line()] if self._buf else []

    def _line(self) -> Event:
        raw = bytes(self._buf)
        self._buf.clear()
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        return Event(data=raw.decode("utf-8", errors="replace"))
