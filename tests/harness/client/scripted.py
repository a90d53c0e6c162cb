"""A scripted twisted.web server on 127.0.0.1 and the stream builders the client tests share.

Each test scripts the exact bytes, timing and ending (finish, close, reset, stall) of
one response, so the classification is checked against what really went over TCP.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from harness.client import StreamResult, stream_request
from server_core.sse import encode_event

# -- scripted server ---------------------------------------------------------

Action = tuple[Any, ...]


@dataclass
class Seen:
    """One request as the server saw it."""

    method: str
    path: str
    body: bytes
    headers: dict[str, list[str]]
    ended: Deferred[str] = field(default_factory=Deferred)  # "finished" | "lost"


class _TrackingFactory(WrappingFactory):
    """Knows the open server-side connections so teardown can wait for them to close."""

    def __init__(self, wrapped: Site) -> None:
        super().__init__(wrapped)
        self._idle: list[Deferred[None]] = []

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            waiters, self._idle = self._idle, []
            for d in waiters:
                d.callback(None)

    def wait_idle(self) -> Deferred[None]:
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d


class _ScriptResource(Resource):
    isLeaf = True

    def __init__(self, server: ScriptServer) -> None:
        super().__init__()
        self._server = server

    def render(self, request: Request) -> Any:
        self._server.handle(request)
        return NOT_DONE_YET


class ScriptServer:
    """A web server that answers every request with the current script.

    Actions: ("write", bytes), ("wait", seconds), ("finish",) (clean end of the
    response), ("close",) (FIN without ending the HTTP body), ("reset",) (RST),
    ("stall",) (keep the socket open, send nothing more).
    """

    def __init__(self) -> None:
        self.status = 200
        self.headers: dict[str, str] = {"Content-Type": "text/event-stream"}
        self.actions: list[Action] = [("finish",)]
        self.seen: list[Seen] = []
        self._calls: list[IDelayedCall] = []
        self.factory = _TrackingFactory(Site(_ScriptResource(self)))
        self.port = reactor.listenTCP(0, cast(Any, self.factory), interface="127.0.0.1")

    def url(self, path: str = "/v1/chat/completions") -> str:
        host: Any = self.port.getHost()
        return f"http://127.0.0.1:{host.port}{path}"

    def script(
        self, actions: list[Action], status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        self.actions = actions
        self.status = status
        self.headers = {"Content-Type": "text/event-stream"} if headers is None else headers

    def handle(self, request: Request) -> None:
        assert request.content is not None
        seen = Seen(
            method=request.method.decode(),
            path=request.path.decode(),
            body=request.content.read(),
            headers={
                k.decode().lower(): [v.decode() for v in vs]
                for k, vs in request.requestHeaders.getAllRawHeaders()
            },
        )
        self.seen.append(seen)
        state = {"lost": False}

        def lost(_: object) -> str:
            state["lost"] = True
            return "lost"

        request.notifyFinish().addCallbacks(lambda _: "finished", lost).chainDeferred(seen.ended)
        request.setResponseCode(self.status)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        # Small writes must leave at once: Nagle + delayed ACK would add 40 ms gaps.
        transport: Any = request.transport
        transport.setTcpNoDelay(True)
        self._run(request, list(self.actions), 0, state)

    def _run(self, request: Request, actions: list[Action], i: int, state: dict[str, bool]) -> None:
        transport: Any = request.transport
        while i < len(actions) and not state["lost"]:
            kind, *args = actions[i]
            i += 1
            if kind == "write":
                request.write(args[0])
            elif kind == "wait":
                self._calls.append(
                    reactor.callLater(args[0], self._run, request, actions, i, state)
                )
                return
            elif kind == "finish":
                request.finish()
                return
            elif kind == "close":
                transport.loseConnection()
                return
            elif kind == "reset":
                # SO_LINGER 0 turns the close into a real RST.
                transport.getHandle().setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                transport.abortConnection()
                return
            elif kind == "stall":
                return
            else:
                raise AssertionError(f"unknown action {kind}")

    async def stop(self) -> None:
        for call in self._calls:
            if call.active():
                call.cancel()
        stopped = self.port.stopListening()
        if stopped is not None:
            await stopped
        for proto in list(self.factory.protocols):
            proto.transport.abortConnection()
        await self.factory.wait_idle().addTimeout(3.0, reactor)


async def ended(srv: ScriptServer, index: int = 0) -> str:
    """How the server saw request ``index`` end; bounded so a bug fails fast."""
    return await srv.seen[index].ended.addTimeout(3.0, reactor)


# -- stream builders ---------------------------------------------------------

CID = "chatcmpl-abc"
MODEL = "served-alias"


def chunk(
    content: str | None = None,
    *,
    role: str | None = None,
    finish: str | None = None,
    line_end: str = "\n",
) -> bytes:
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
        delta["content"] = None
    if content is not None:
        delta["content"] = content
    obj = {
        "id": CID,
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return encode_event(json.dumps(obj, ensure_ascii=False), line_end=line_end)


def chat_stream(words: list[str], *, line_end: str = "\n") -> list[bytes]:
    frames = [chunk(role="assistant", line_end=line_end)]
    frames += [chunk(w, line_end=line_end) for w in words]
    frames.append(chunk(finish="stop", line_end=line_end))
    return frames


ERROR_OBJ = {"code": 500, "message": "slot crashed", "type": "server_error"}
ERROR_FRAME = encode_event(json.dumps({"error": ERROR_OBJ}))
LEGACY_ERROR_FRAME = b"error: " + json.dumps(ERROR_OBJ).encode() + b"\n\n"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def writes(frames: list[bytes]) -> list[Action]:
    return [("write", f) for f in frames]


async def run(srv: ScriptServer, **kw: Any) -> StreamResult:
    kw.setdefault("timeout", 5.0)
    return await stream_request(srv.url(), BODY, **kw)


def completion_body() -> bytes:
    obj = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "héllo"},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    return json.dumps(obj).encode()
