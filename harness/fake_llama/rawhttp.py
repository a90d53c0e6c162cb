"""A raw-socket HTTP/1.1 client that records exactly what came over the wire.

Meant for tests that must see faults precisely: the HTTP chunk boundaries (where a
write was split), whether the body terminator arrived, and whether the connection
ended with FIN, RST or not at all (idle). Not a general HTTP client.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from twisted.internet import error as ierror
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure

from server_core.sse import Comment, Event, SseDecoder

__all__ = ["RawResponse", "raw_request"]


@dataclass
class RawResponse:
    """What one request got back."""

    raw: bytes = b""
    status: int | None = None
    reason: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)  # lower-case names
    chunks: list[bytes] = field(default_factory=list)  # chunked body, one item per chunk
    body: bytes = b""
    complete: bool = False  # the HTTP body ended properly (terminator / full length)
    # How the connection ended: "fin" (server closed cleanly), "reset" (RST),
    # "idle" (nothing for idle_timeout, we aborted), "timeout" (the overall timeout
    # passed, we aborted), "client" (we closed: response complete, or
    # disconnect_after_events reached), "refused".
    ended: str = ""
    items: list[Event | Comment] = field(default_factory=list)  # SSE items in order
    item_times: list[float] = field(default_factory=list)
    t_connected: float = 0.0
    t_headers: float | None = None

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def events(self) -> list[Event]:
        return [i for i in self.items if isinstance(i, Event)]

    @property
    def comments(self) -> list[Comment]:
        return [i for i in self.items if isinstance(i, Comment)]

    @property
    def data(self) -> list[str]:
        """The ``data`` of every event, in order (``"[DONE]"`` included)."""
        return [e.data for e in self.events if e.data is not None]

    def json(self) -> Any:
        return json.loads(self.body)

    def json_events(self) -> list[Any]:
        """Events parsed as JSON (``[DONE]`` and unparsable events are skipped)."""
        out = []
        for d in self.data:
            try:
                out.append(json.loads(d))
            except ValueError:
                continue
        return out


class _RawProtocol(Protocol):
    def __init__(self, factory: _RawFactory) -> None:
        self.f = factory
        self.res = factory.res
        self.buf = b""
        self.stage = "status"
        self.remaining: int | None = None  # content-length left / current chunk left
        self.chunked = False
        self.decoder = SseDecoder()
        self.idle_call: IDelayedCall | None = None
        self.deadline_call: IDelayedCall | None = None
        self.closed_by_us = False

    def connectionMade(self) -> None:
        self.res.t_connected = self.f.reactor.seconds()
        assert self.transport is not None
        self.transport.write(self.f.request_bytes)
        self._rearm()
        if self.f.timeout is not None:
            self.deadline_call = self.f.reactor.callLater(self.f.timeout, self._deadline)

    def _deadline(self) -> None:
        self.deadline_call = None
        if not self.res.ended:
            self.res.ended = "timeout"
        self._close(abort=True)

    def _rearm(self) -> None:
        if self.idle_call is not None and self.idle_call.active():
            self.idle_call.cancel()
        self.idle_call = self.f.reactor.callLater(self.f.idle_timeout, self._idle)

    def _idle(self) -> None:
        self.idle_call = None
        self.res.ended = "idle"
        self._close(abort=True)

    def _close(self, *, abort: bool) -> None:
        self.closed_by_us = True
        if self.transport is not None:
            if abort:
                self.transport.abortConnection()  # type: ignore[attr-defined]
            else:
                self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self.res.raw += data
        self.buf += data
        self._rearm()
        self._parse()

    def _body_bytes(self, data: bytes) -> None:
        self.res.body += data
        now = self.f.reactor.seconds()
        for item in self.decoder.feed(data):
            self.res.items.append(item)
            self.res.item_times.append(now)
        n = self.f.disconnect_after_events
        if n is not None and len(self.res.events) >= n and not self.closed_by_us:
            self.res.ended = "client"
            self._close(abort=self.f.abort_on_disconnect)

    def _parse(self) -> None:
        """Consume ``buf`` stage by stage until a stage needs more bytes (or is done)."""
        while True:
            step = self._STAGES.get(self.stage)
            if step is None or not step(self):
                return

    # Each stage consumes what it can; True = go on with the next stage.

    def _stage_status(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = self.buf[:end].decode("latin-1")
        self.buf = self.buf[end + 4 :]
        self._read_head(head)
        res = self.res
        if self.f.method == "HEAD" or res.status in (204, 304):
            self._complete()  # no body, whatever the headers announce
            return False
        te = (res.header("transfer-encoding") or "").lower()
        cl = res.header("content-length")
        if "chunked" in te:
            self.chunked = True
            self.stage = "chunk-size"
        elif cl is not None:
            self.remaining = int(cl)
            self.stage = "length"
            if self.remaining == 0:
                self._complete()
                return False
        else:
            self.stage = "until-close"
        return True

    def _read_head(self, head: str) -> None:
        res = self.res
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        res.status = int(parts[1])
        res.reason = parts[2] if len(parts) > 2 else ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            res.headers.setdefault(name.strip().lower(), []).append(value.strip())
        res.t_headers = self.f.reactor.seconds()

    def _stage_chunk_size(self) -> bool:
        end = self.buf.find(b"\r\n")
        if end < 0:
            return False
        size = int(self.buf[:end].split(b";")[0], 16)
        self.buf = self.buf[end + 2 :]
        if size == 0:
            self.stage = "trailer"
        else:
            self.remaining = size
            self.res.chunks.append(b"")
            self.stage = "chunk-data"
        return True

    def _take(self) -> bytes:
        """Up to ``remaining`` body bytes from ``buf`` (b"" when it is empty)."""
        assert self.remaining is not None
        take = self.buf[: self.remaining]
        self.buf = self.buf[len(take) :]
        self.remaining -= len(take)
        return take

    def _stage_chunk_data(self) -> bool:
        if not self.buf:
            return False
        take = self._take()
        self.res.chunks[-1] += take
        self._body_bytes(take)
        if self.remaining == 0:
            self.stage = "chunk-end"
        return True

    def _stage_chunk_end(self) -> bool:
        if len(self.buf) < 2:
            return False
        self.buf = self.buf[2:]
        self.stage = "chunk-size"
        return True

    def _stage_trailer(self) -> bool:
        end = self.buf.find(b"\r\n")
        if end < 0:
            return False
        trailer = self.buf[:end]
        self.buf = self.buf[end + 2 :]
        if not trailer:
            self._complete()
            return False
        return True

    def _stage_length(self) -> bool:
        if not self.buf:
            return False
        self._body_bytes(self._take())
        if self.remaining == 0:
            self._complete()
            return False
        return True

    def _stage_until_close(self) -> bool:
        if self.buf:
            data, self.buf = self.buf, b""
            self._body_bytes(data)
        return False

    _STAGES: ClassVar[dict[str, Callable[[_RawProtocol], bool]]] = {
        "status": _stage_status,
        "chunk-size": _stage_chunk_size,
        "chunk-data": _stage_chunk_data,
        "chunk-end": _stage_chunk_end,
        "trailer": _stage_trailer,
        "length": _stage_length,
        "until-close": _stage_until_close,
    }

    def _complete(self) -> None:
        self.res.complete = True
        self.stage = "done"
        if not self.f.wait_close and not self.closed_by_us:
            self.res.ended = "client"
            self._close(abort=False)

    def connectionLost(self, reason: Failure = ierror.ConnectionDone) -> None:  # type: ignore[assignment]
        for call in (self.idle_call, self.deadline_call):
            if call is not None and call.active():
                call.cancel()
        if self.stage == "until-close":
            self.res.complete = True
        if not self.res.ended:
            if self.closed_by_us:
                self.res.ended = "client"
            elif reason.check(ierror.ConnectionDone):
                self.res.ended = "fin"
            else:
                self.res.ended = "reset"
        self.f.finished(self.res)


class _RawFactory(ClientFactory):
    def __init__(
        self,
        reactor: Any,
        method: str,
        request_bytes: bytes,
        *,
        idle_timeout: float,
        timeout: float | None,
        wait_close: bool,
        disconnect_after_events: int | None,
        abort_on_disconnect: bool,
    ) -> None:
        self.reactor = reactor
        self.method = method.upper()
        self.request_bytes = request_bytes
        self.idle_timeout = idle_timeout
        self.timeout = timeout
        self.wait_close = wait_close
        self.disconnect_after_events = disconnect_after_events
        self.abort_on_disconnect = abort_on_disconnect
        self.res = RawResponse()
        self.d: Deferred[RawResponse] = Deferred()

    def buildProtocol(self, addr: Any) -> _RawProtocol:
        return _RawProtocol(self)

    def finished(self, res: RawResponse) -> None:
        if not self.d.called:
            self.d.callback(res)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.res.ended = "refused"
        self.finished(self.res)


def raw_request(
    reactor: Any,
    host: str,
    port: int,
    method: str = "GET",
    path: str = "/",
    body: bytes | str | Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    idle_timeout: float = 5.0,
    timeout: float | None = 30.0,
    wait_close: bool = False,
    disconnect_after_events: int | None = None,
    abort_on_disconnect: bool = False,
) -> Deferred[RawResponse]:
    """Send one request over a fresh TCP connection and record the answer.

    ``body``: bytes, text, or a mapping sent as JSON. The Deferred fires once the
    connection is gone: after a complete response (we close, unless ``wait_close``),
    after the server closed/reset it, after ``idle_timeout`` seconds without a byte,
    after ``timeout`` seconds in all (None = no limit), or after
    ``disconnect_after_events`` SSE events (we close: FIN, or RST with
    ``abort_on_disconnect``). A refused connection gives ``ended == "refused"``.
    """
    if isinstance(body, Mapping):
        payload = json.dumps(body).encode("utf-8")
    elif isinstance(body, str):
        payload = body.encode("utf-8")
    else:
        payload = body or b""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    hdrs = dict(headers or {})
    if body is not None:
        hdrs.setdefault("Content-Type", "application/json")
        hdrs["Content-Length"] = str(len(payload))
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    request_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + payload
    factory = _RawFactory(
        reactor,
        method,
        request_bytes,
        idle_timeout=idle_timeout,
        timeout=timeout,
        wait_close=wait_close,
        disconnect_after_events=disconnect_after_events,
        abort_on_disconnect=abort_on_disconnect,
    )
    reactor.connectTCP(host, port, factory, timeout=5)
    return factory.d
