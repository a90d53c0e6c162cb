"""Server-Sent Events codec: a frame encoder and an incremental decoder.

Pure code, no I/O: both server_core and harness use it (through ``server_core.sse``).
The decoder follows the WHATWG event-stream grammar (LF, CRLF and CR line ends,
comments, multi-line data) and additionally keeps fields the standard ignores
(llama-server's legacy ``error: {...}`` line) so a relay can recognise them. The
Twisted side that writes these frames to a client is ``writer``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DONE",
    "DONE_FRAME",
    "Comment",
    "Event",
    "SseDecoder",
    "decode_all",
    "encode_comment",
    "encode_event",
]

DONE = "[DONE]"
DONE_FRAME = b"data: [DONE]\n\n"

_LINE_BREAKS = ("\r\n", "\r", "\n")


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event. ``data`` is None when the frame carried no data line."""

    data: str | None = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    # Non-standard fields in arrival order, e.g. (("error", "{...}"),).
    extra: tuple[tuple[str, str], ...] = field(default=())

    @property
    def is_done(self) -> bool:
        """True for the OpenAI end-of-stream marker ``data: [DONE]``."""
        return self.data == DONE

    def get(self, name: str) -> str | None:
        """Value of the first non-standard field called ``name``."""
        for key, value in self.extra:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Comment:
    """A comment line (``: text``); servers use them as keep-alive pings."""

    text: str = ""


def _check_single_line(name: str, value: str) -> None:
    if any(brk in value for brk in _LINE_BREAKS):
        raise ValueError(f"SSE field {name!r} must not contain a line break")


def encode_event(
    data: str | None = None,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
    line_end: str = "\n",
) -> bytes:
    """Encode one event. Multi-line ``data`` becomes several ``data:`` lines."""
    if line_end not in _LINE_BREAKS:
        raise ValueError("line_end must be LF, CRLF or CR")
    lines: list[str] = []
    if event is not None:
        _check_single_line("event", event)
        lines.append(f"event: {event}")
    if id is not None:
        _check_single_line("id", id)
        if "\0" in id:
            raise ValueError("SSE id must not contain NUL")
        lines.append(f"id: {id}")
    if retry is not None:
        if retry < 0:
            raise ValueError("SSE retry must be >= 0")
        lines.append(f"retry: {retry}")
    if data is not None:
        # Normalise every break to one line per data field; the decoder joins with LF.
        for part in data.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            lines.append(f"data: {part}")
    if not lines:
        raise ValueError("an SSE event needs at least one field")
    return (line_end.join(lines) + line_end + line_end).encode("utf-8")


def encode_comment(text: str = "", *, line_end: str = "\n") -> bytes:
    """Encode a comment frame (``: text`` + blank line). Multi-line text -> several lines."""
    if line_end not in _LINE_BREAKS:
        raise ValueError("line_end must be LF, CRLF or CR")
    parts = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    body = line_end.join(f": {p}" if p else ":" for p in parts)
    return (body + line_end + line_end).encode("utf-8")


class SseDecoder:
    """Incremental decoder: feed bytes split anywhere, get events and comments back.

    Bytes are split into lines before UTF-8 decoding, so a character cut across two
    ``feed`` calls is reassembled (line breaks are ASCII and never inside a character).
    """

    def __init__(self, *, max_line: int = 1 << 20, max_event: int = 8 << 20) -> None:
        self._buf = bytearray()
        self._pending_cr = False
        self._max_line = max_line
        self._max_event = max_event
        self._reset_frame()

    def _reset_frame(self) -> None:
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self._extra: list[tuple[str, str]] = []
        self._frame_has_fields = False
        self._frame_size = 0

    @property
    def at_boundary(self) -> bool:
        """True when no partial line and no partially built event is held."""
        return not self._buf and not self._frame_has_fields

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete line."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[Event | Comment]:
        """The events and comments completed by ``chunk``; ValueError past the size caps."""
        out: list[Event | Comment] = []
        if not chunk:
            return out
        start = 0
        if self._pending_cr:
            # A CR ended the previous line; a LF right after it belongs to that break.
            self._pending_cr = False
            if chunk[:1] == b"\n":
                start = 1
        buf = self._buf
        n = len(chunk)
        i = start
        while i < n:
            cr = chunk.find(b"\r", i)
            lf = chunk.find(b"\n", i)
            if cr == -1 and lf == -1:
                buf += chunk[i:]
                break
            if cr == -1 or (lf != -1 and lf < cr):
                end, nxt = lf, lf + 1
            else:
                end = cr
                if cr + 1 < n:
                    nxt = cr + 2 if chunk[cr + 1 : cr + 2] == b"\n" else cr + 1
                else:
                    nxt = cr + 1
                    self._pending_cr = True
            if buf:
                buf += chunk[i:end]
                line = bytes(buf)
                buf.clear()
            else:
                line = chunk[i:end]
            self._line(line, out)
            i = nxt
        if len(buf) > self._max_line:
            raise ValueError(f"SSE line longer than {self._max_line} bytes")
        return out

    def finish(self) -> list[Event | Comment]:
        """End of stream: an unterminated event is discarded, as the standard says."""
        self._buf.clear()
        self._pending_cr = False
        self._reset_frame()
        return []

    def _line(self, raw: bytes, out: list[Event | Comment]) -> None:
        if not raw:
            if self._data or self._extra:
                out.append(
                    Event(
                        data="\n".join(self._data) if self._data else None,
                        event=self._event,
                        id=self._id,
                        retry=self._retry,
                        extra=tuple(self._extra),
                    )
                )
            self._reset_frame()
            return
        line = raw.decode("utf-8", "replace")
        if line[0] == ":":
            text = line[1:]
            out.append(Comment(text[1:] if text.startswith(" ") else text))
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        self._frame_has_fields = True
        # Lines of one event pile up until its blank line: bound the whole event too.
        self._frame_size += len(raw)
        if self._frame_size > self._max_event:
            raise ValueError(f"SSE event larger than {self._max_event} bytes")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry":
            if value.isdigit():
                self._retry = int(value)
        else:
            self._extra.append((name, value))


def decode_all(payload: bytes) -> list[Event | Comment]:
    """Decode a complete byte string (convenience for tests and non-streaming callers)."""
    decoder = SseDecoder()
    items = decoder.feed(payload)
    items.extend(decoder.finish())
    return items
