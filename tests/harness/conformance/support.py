"""What the conformance tests share: the fake's known deviations, a server that plants
one violation at a time, and a way to run the CLI or pytest as a child process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from harness.conformance import CHECKS, Report
from server_core.sse import DONE_FRAME, encode_comment, encode_event

__all__ = [
    "AUTH_CHECKS",
    "EXTERNAL_NA",
    "FAKE_FAILS",
    "KEY",
    "REPO",
    "free_port",
    "names",
    "planted",
    "reactor",
    "run_child",
    "table",
]

reactor: Any = _reactor
REPO = Path(__file__).resolve().parents[3]

# What the fake llama-server (like llama-server itself) fails, and why.
FAKE_FAILS = {
    # llama-server has no GET /v1/models/{id} route: 404 "File Not Found".
    "models.retrieve",
    # llama-server serves its one model whatever "model" says. (When it is missing, it
    # serves it too, which errors.missing_model accepts since issue 11: a default model.)
    "errors.unknown_model",
    # llama-server accepts an empty conversation and generates from the empty prompt.
    "errors.empty_messages",
    # llama-server answers a JSON parse error with 500 (nlohmann's exception text).
    "errors.invalid_json",
    # llama-server's Anthropic conversion throws a runtime_error for a missing
    # "messages": 500, with its OpenAI-shaped error body, not Anthropic's.
    "messages.errors.missing_messages",
    "messages.errors.shape",
    # It skips a "messages" that is not an array and generates from nothing: 200.
    "messages.errors.messages_type",
    # llama-server has no Ollama API: every /api/... route is a 404 "File Not Found".
    *(c.name for c in CHECKS if c.name.startswith("ollama.")),
}
# What server_core cannot know of an external model (no GGUF file, never loaded by it,
# an upstream without --embeddings): its Ollama checks that are n/a.
EXTERNAL_NA = {"ollama.show.context_length", "ollama.ps", "ollama.embed"}
AUTH_CHECKS = {"auth.missing_key", "auth.wrong_key"}
KEY = "conformance-key"


def names(report: Report, result: str) -> set[str]:
    return {r.name for r in report.results if r.result == result}


def table(report: Report) -> str:
    return "\n" + report.format_table(width=160)


# -- a server with planted violations --------------------------------------------------------


def _chunk(delta: dict[str, Any], finish: str | None = None, cid: str = "c-1") -> bytes:
    obj = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "planted",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return encode_event(json.dumps(obj))


class PlantedApi(Resource):
    """A minimal OpenAI server whose streams break in one chosen way (``mode``).

    ``ok``: correct; ``nodone``: the body ends cleanly without ``[DONE]``; ``errdone``:
    an error event then ``[DONE]`` (llama-server's old dialect); ``afterdone``: a chunk
    after ``[DONE]``; ``twoids``: the id changes mid-stream. Invalid requests get 422
    (a FastAPI-style status) so the strictness levels can be told apart.
    """

    isLeaf = True

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        if request.path == b"/v1/models":
            return json.dumps(
                {"object": "list", "data": [{"id": "planted", "object": "model"}]}
            ).encode()
        request.setResponseCode(404)
        return b'{"error": {"message": "no such route"}}'

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        try:
            body = json.loads(request.content.read())
            ok = isinstance(body, dict) and "model" in body and "messages" in body
        except ValueError:
            ok = False
        if not ok:
            request.setResponseCode(422)
            request.setHeader(b"content-type", b"application/json")
            return b'{"error": {"message": "unprocessable"}}'
        request.setHeader(b"content-type", b"text/event-stream")
        out = [_chunk({"role": "assistant", "content": None}), _chunk({"content": "Hi"})]
        if self.mode == "errdone":
            out.append(encode_event(json.dumps({"error": {"message": "boom", "code": 500}})))
            out.append(DONE_FRAME)
        else:
            out.append(_chunk({"content": " there"}, cid="c-2" if self.mode == "twoids" else "c-1"))
            out.append(_chunk({}, "stop"))
            out.append(encode_comment("keep-alive"))
            if self.mode != "nodone":
                out.append(DONE_FRAME)
            if self.mode == "afterdone":
                out.append(_chunk({"content": "late"}))
        return b"".join(out)


class _Tracking(WrappingFactory):
    """Knows the open server-side connections so teardown can wait for them to close."""

    idle: Deferred[None] | None = None

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        super().unregisterProtocol(p)
        if not self.protocols and self.idle is not None:
            d, self.idle = self.idle, None
            d.callback(None)

    def wait_idle(self) -> Deferred[None]:
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self.idle = d
        for p in list(self.protocols):
            p.transport.loseConnection()
        return d


@asynccontextmanager
async def planted(mode: str) -> AsyncIterator[str]:
    factory = _Tracking(Site(PlantedApi(mode)))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        yield f"http://127.0.0.1:{port.getHost().port}"
    finally:
        await port.stopListening()
        await factory.wait_idle()


# -- child processes -------------------------------------------------------------------------


class _Collect(ProcessProtocol):
    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(getattr(reason.value, "exitCode", None) or 0)


async def run_child(args: list[str], cwd: Path, timeout: float = 30.0) -> tuple[int, str, str]:
    """Run ``python ARGS`` as a child without blocking the reactor (our servers run on it)."""
    proto = _Collect()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = reactor.spawnProcess(proto, sys.executable, [sys.executable, *args], env, str(cwd))
    killer = reactor.callLater(timeout, proc.signalProcess, signal.SIGKILL)
    try:
        code = await proto.ended
    finally:
        if killer.active():
            killer.cancel()
    return code, proto.out.decode(), proto.err.decode()


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
