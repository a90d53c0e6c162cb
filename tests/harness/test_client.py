"""harness.client against a scripted twisted.web server on 127.0.0.1.

Each test scripts the exact bytes, timing and ending (finish, close, reset, stall) of
one response, so the classification is checked against what really went over TCP.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from harness.client import (
    CONNECT_ERROR,
    DISCONNECTED,
    DONE,
    ERROR_EVENT,
    HTTP_ERROR,
    TIMEOUT,
    TRUNCATED,
    StreamResult,
    chat,
    completions,
    stream_request,
)
from server_core.sse import DONE_FRAME, Event, encode_comment, encode_event

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


@pytest_twisted.async_yield_fixture()
async def server() -> AsyncIterator[ScriptServer]:
    srv = ScriptServer()
    yield srv
    await srv.stop()


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


# -- SSE endings -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_done_stream(server: ScriptServer) -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    usage_frame = encode_event(
        json.dumps({"id": CID, "model": MODEL, "choices": [], "usage": usage})
    )
    server.script([*writes([*chat_stream(["Hel", "lo"]), usage_frame, DONE_FRAME]), ("finish",)])
    r = await run(server, headers={"Authorization": "Bearer k"})
    assert r.outcome == DONE and r.ok
    assert r.status == 200
    assert r.headers["content-type"] == ["text/event-stream"]
    assert r.text == "Hello"
    assert r.finish_reason == "stop"
    assert r.model == MODEL
    assert r.ids == {CID}
    assert r.usage == usage
    assert r.n_events == len(r.events) == 6 and r.events[-1].is_done
    assert len(r.chunks) == 5
    assert r.error is None and r.body is None
    assert not r.after_done and not r.done_after_error
    assert r.end_reason == "complete"
    seen = server.seen[0]
    assert seen.method == "POST" and seen.path == "/v1/chat/completions"
    assert json.loads(seen.body) == BODY
    assert seen.headers["content-type"] == ["application/json"]
    assert seen.headers["authorization"] == ["Bearer k"]
    summary = r.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["outcome"] == "done" and summary["events"] == 6


@pytest_twisted.ensureDeferred
async def test_standard_error_event(server: ScriptServer) -> None:
    server.script([*writes([*chat_stream(["a"])[:2], ERROR_FRAME]), ("finish",)])
    r = await run(server)
    assert r.outcome == ERROR_EVENT
    assert r.error == ERROR_OBJ
    assert r.text == "a"
    assert not any(e.is_done for e in r.events)
    assert not r.done_after_error and not r.after_error


@pytest_twisted.ensureDeferred
async def test_legacy_error_line_then_done(server: ScriptServer) -> None:
    server.script([*writes([chunk("x"), LEGACY_ERROR_FRAME, DONE_FRAME]), ("finish",)])
    r = await run(server)
    assert r.outcome == ERROR_EVENT
    assert r.done_after_error
    assert r.error == ERROR_OBJ
    assert r.events[1].get("error") is not None and r.events[2].is_done


@pytest_twisted.ensureDeferred
async def test_data_after_error_is_flagged(server: ScriptServer) -> None:
    server.script([*writes([ERROR_FRAME, chunk("late")]), ("finish",)])
    r = await run(server)
    assert r.outcome == ERROR_EVENT and r.after_error


@pytest.mark.parametrize(("ending", "end_reason"), [("finish", "complete"), ("close", "lost")])
@pytest_twisted.ensureDeferred
async def test_clean_close_without_done_is_truncated(
    server: ScriptServer, ending: str, end_reason: str
) -> None:
    server.script([*writes(chat_stream(["a", "b"])), (ending,)])
    r = await run(server)
    assert r.outcome == TRUNCATED
    assert r.end_reason == end_reason
    assert r.text == "ab" and r.finish_reason == "stop"


@pytest_twisted.ensureDeferred
async def test_reset_is_truncated(server: ScriptServer) -> None:
    server.script([*writes(chat_stream(["a"])), ("wait", 0.02), ("reset",)])
    r = await run(server)
    assert r.outcome == TRUNCATED
    assert r.end_reason == "lost"
    assert r.exception is not None and "ResponseFailed" in r.exception
    assert r.n_events == 3


@pytest_twisted.ensureDeferred
async def test_partial_frame_then_close_is_truncated(server: ScriptServer) -> None:
    server.script([*writes([chunk("a"), b"data: [DO"]), ("close",)])
    r = await run(server)
    assert r.outcome == TRUNCATED and r.n_events == 1


@pytest_twisted.ensureDeferred
async def test_data_after_done_is_flagged(server: ScriptServer) -> None:
    server.script([*writes([chunk("a"), DONE_FRAME, chunk("b")]), ("finish",)])
    r = await run(server)
    assert r.outcome == DONE and r.after_done
    assert r.text == "a"


@pytest_twisted.ensureDeferred
async def test_malformed_json_event_counted(server: ScriptServer) -> None:
    server.script([*writes([chunk("a"), b"data: {not json\n\n", DONE_FRAME]), ("finish",)])
    r = await run(server)
    assert r.outcome == DONE and r.invalid_json == 1 and r.n_events == 3


# -- timeouts, disconnects -----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stall_hits_idle_timeout(server: ScriptServer) -> None:
    server.script([*writes(chat_stream(["a"])[:2]), ("stall",)])
    r = await run(server, idle_timeout=0.2)
    assert r.outcome == TIMEOUT
    assert r.end_reason == "idle_timeout"
    assert r.n_events == 2 and r.text == "a"
    assert r.duration is not None and 0.2 <= r.duration < 3.0
    # We aborted: the server sees its client go away.
    assert await ended(server) == "lost"


@pytest_twisted.ensureDeferred
async def test_comments_keep_idle_timeout_away(server: ScriptServer) -> None:
    ping: list[Action] = [("wait", 0.05), ("write", encode_comment("keep-alive"))]
    server.script([("write", chunk("a")), *(ping * 6), ("write", DONE_FRAME), ("finish",)])
    r = await run(server, idle_timeout=0.2)
    assert r.outcome == DONE
    assert r.comments == 6
    assert r.n_events == 2 and len(r.gaps) == 1 and r.gaps[0] >= 0.2


@pytest_twisted.ensureDeferred
async def test_hang_before_headers_hits_total_timeout(server: ScriptServer) -> None:
    server.script([("stall",)])
    r = await run(server, timeout=0.2)
    assert r.outcome == TIMEOUT
    assert r.status is None and r.end_reason == "timeout"
    assert await ended(server) == "lost"


@pytest_twisted.ensureDeferred
async def test_done_then_hang_stays_done(server: ScriptServer) -> None:
    server.script([*writes([chunk("a"), DONE_FRAME]), ("stall",)])
    r = await run(server, idle_timeout=0.2)
    assert r.outcome == DONE and r.end_reason == "idle_timeout"


@pytest_twisted.ensureDeferred
async def test_disconnect_after_aborts_connection(server: ScriptServer) -> None:
    frames = chat_stream([f"w{i}" for i in range(30)])
    actions: list[Action] = []
    for f in frames:
        actions += [("write", f), ("wait", 0.01)]
    server.script([*actions, ("write", DONE_FRAME), ("finish",)])
    r = await run(server, disconnect_after=3)
    assert r.outcome == DISCONNECTED
    assert r.end_reason == "client_abort"
    assert r.n_events == 3 and r.text == "w0w1"
    assert await ended(server) == "lost"


@pytest_twisted.ensureDeferred
async def test_disconnect_after_done_keeps_done(server: ScriptServer) -> None:
    server.script([*writes([chunk("a"), DONE_FRAME]), ("stall",)])
    r = await run(server, disconnect_after=2)
    assert r.outcome == DONE


@pytest_twisted.ensureDeferred
async def test_caller_cancel_aborts(server: ScriptServer) -> None:
    server.script([("write", chunk("a")), ("stall",)])
    got: Deferred[None] = Deferred()

    def on_event(ev: Event, t: float) -> None:
        if not got.called:
            got.callback(None)

    d = ensureDeferred(run(server, on_event=on_event))
    await got.addTimeout(3.0, reactor)
    d.cancel()
    with pytest.raises(CancelledError):
        await d
    assert await ended(server) == "lost"


# -- HTTP errors and non-stream bodies ---------------------------------------


@pytest_twisted.ensureDeferred
async def test_http_error_json_body(server: ScriptServer) -> None:
    err = {"error": {"code": 400, "message": "Expected 'messages' to be an array",
                     "type": "invalid_request_error"}}  # fmt: skip
    server.script(
        [("write", json.dumps(err).encode()), ("finish",)],
        status=400,
        headers={"Content-Type": "application/json"},
    )
    r = await run(server)
    assert r.outcome == HTTP_ERROR and r.status == 400
    assert r.error == err["error"]
    assert r.body == json.dumps(err).encode()
    assert r.events == []


@pytest_twisted.ensureDeferred
async def test_http_error_non_json_body(server: ScriptServer) -> None:
    server.script(
        [("write", b"<html>busy</html>"), ("finish",)],
        status=503,
        headers={"Content-Type": "text/html"},
    )
    r = await run(server)
    assert r.outcome == HTTP_ERROR and r.status == 503
    assert r.error is None and r.body == b"<html>busy</html>"


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


@pytest_twisted.ensureDeferred
async def test_non_stream_json_done(server: ScriptServer) -> None:
    body = completion_body()
    server.script(
        [("write", body[:10]), ("wait", 0.01), ("write", body[10:]), ("finish",)],
        headers={"Content-Type": "application/json", "Content-Length": str(len(body))},
    )
    r = await run(server)
    assert r.outcome == DONE
    assert r.text == "héllo" and r.finish_reason == "length" and r.model == MODEL
    assert r.ids == {"chatcmpl-9"} and r.usage is not None
    assert r.json_body == json.loads(body) and r.body == body
    assert r.events == [] and r.end_reason == "complete"


@pytest_twisted.ensureDeferred
async def test_non_stream_truncated_body(server: ScriptServer) -> None:
    body = completion_body()
    server.script(
        [("write", body[:20]), ("close",)],
        headers={"Content-Type": "application/json", "Content-Length": str(len(body))},
    )
    r = await run(server)
    assert r.outcome == TRUNCATED and r.end_reason == "lost"
    assert r.body == body[:20]


@pytest_twisted.ensureDeferred
async def test_non_stream_invalid_json_is_truncated(server: ScriptServer) -> None:
    server.script([("write", b'{"choices": ['), ("finish",)], headers={"Content-Type": "x/y"})
    r = await run(server)
    assert r.outcome == TRUNCATED and r.end_reason == "complete"
    assert r.json_body is None


@pytest_twisted.ensureDeferred
async def test_non_stream_error_object_with_200(server: ScriptServer) -> None:
    server.script(
        [("write", json.dumps({"error": "boom"}).encode()), ("finish",)],
        headers={"Content-Type": "application/json"},
    )
    r = await run(server)
    assert r.outcome == ERROR_EVENT and r.error == {"message": "boom"}


@pytest_twisted.ensureDeferred
async def test_connect_refused() -> None:
    srv = ScriptServer()
    url = srv.url()
    await srv.stop()
    r = await stream_request(url, BODY, timeout=5.0)
    assert r.outcome == CONNECT_ERROR
    assert r.status is None and r.end_reason == "connect_failed"
    assert r.exception is not None and "ConnectionRefused" in r.exception


# -- framing -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_utf8_split_across_writes(server: ScriptServer) -> None:
    frame = chunk("né🙂")
    cut = frame.index("🙂".encode()) + 2  # inside the 4-byte emoji
    cut_e = frame.index("é".encode()) + 1  # inside the 2-byte é
    server.script(
        [
            ("write", frame[:cut_e]),
            ("wait", 0.01),
            ("write", frame[cut_e:cut]),
            ("wait", 0.01),
            ("write", frame[cut:]),
            ("write", DONE_FRAME),
            ("finish",),
        ]
    )
    r = await run(server)
    assert r.outcome == DONE and r.text == "né🙂"


@pytest_twisted.ensureDeferred
async def test_crlf_framing(server: ScriptServer) -> None:
    frames = [*chat_stream(["x", "y"], line_end="\r\n"), b"data: [DONE]\r\n\r\n"]
    # Split every frame between its CR and LF to exercise the pending-CR path.
    actions: list[Action] = []
    for f in frames:
        actions += [("write", f[:-1]), ("write", f[-1:])]
    server.script([*actions, ("finish",)])
    r = await run(server)
    assert r.outcome == DONE and r.text == "xy" and not r.after_done
    assert r.n_events == 5


@pytest_twisted.ensureDeferred
async def test_timings_are_ordered(server: ScriptServer) -> None:
    actions: list[Action] = [("wait", 0.03)]
    for f in [*chat_stream(["a", "b", "c"]), DONE_FRAME]:
        actions += [("write", f), ("wait", 0.02)]
    server.script([*actions, ("finish",)])
    r = await run(server)
    assert r.outcome == DONE
    assert r.t_headers is not None and r.t_first_byte is not None
    assert r.t_first_token is not None and r.t_end is not None
    assert r.t_start <= r.t_headers <= r.t_first_byte <= r.t_first_token <= r.t_end
    assert r.ttfb is not None and r.ttfb >= 0.03
    assert r.ttft is not None and r.ttft >= r.ttfb
    assert len(r.gaps) == r.n_events - 1 == 5
    assert all(g >= 0 for g in r.gaps)
    assert r.event_times == sorted(r.event_times)
    assert sum(r.gaps) == pytest.approx(r.event_times[-1] - r.event_times[0])
    # The role chunk carries no text; the first token is the second event.
    assert r.t_first_token == r.event_times[1]


@pytest_twisted.ensureDeferred
async def test_max_events_caps_storage_only(server: ScriptServer) -> None:
    server.script([*writes([*chat_stream(["a", "b", "c"]), DONE_FRAME]), ("finish",)])
    r = await run(server, max_events=2)
    assert r.outcome == DONE
    assert len(r.events) == 2 and len(r.chunks) == 2 and r.n_events == 6
    assert r.text == "abc" and len(r.gaps) == 5


@pytest_twisted.ensureDeferred
async def test_chat_and_completions_helpers(server: ScriptServer) -> None:
    text_chunk = encode_event(json.dumps({"id": "c1", "model": MODEL,
                                          "choices": [{"index": 0, "text": "ok"}]}))  # fmt: skip
    server.script([*writes([text_chunk, DONE_FRAME]), ("finish",)])
    base = server.url("")
    r = await completions(base + "/v1/", "m", "say ok", max_tokens=4, timeout=5.0)
    assert r.outcome == DONE and r.text == "ok"
    assert server.seen[-1].path == "/v1/completions"
    assert json.loads(server.seen[-1].body) == {
        "model": "m",
        "prompt": "say ok",
        "stream": True,
        "max_tokens": 4,
    }
    server.script([*writes([*chat_stream(["hi"]), DONE_FRAME]), ("finish",)])
    r = await chat(base, "m", [{"role": "user", "content": "x"}], idle_timeout=2.0)
    assert r.outcome == DONE and r.text == "hi"
    assert server.seen[-1].path == "/v1/chat/completions"
    assert "idle_timeout" not in json.loads(server.seen[-1].body)


@pytest_twisted.ensureDeferred
async def test_llama_native_completion_content(server: ScriptServer) -> None:
    frames = [
        encode_event(json.dumps({"content": "to", "stop": False})),
        encode_event(json.dumps({"content": "ken", "stop": True, "stop_type": "limit"})),
    ]
    server.script([*writes(frames), ("finish",)])
    r = await stream_request(server.url("/completion"), {"prompt": "p"}, timeout=5.0)
    # llama-server's native endpoint ends without [DONE]: the client reports that honestly.
    assert r.outcome == TRUNCATED
    assert r.text == "token" and r.finish_reason == "length"


# -- property: chunking never changes the verdict ------------------------------

TEXT_WORDS = ["Hé", "llo", " wö", "rld ", "🙂", "✓"]
EXPECTED = {
    "done": (DONE, False),
    "error": (ERROR_EVENT, False),
    "legacy": (ERROR_EVENT, True),
    "close": (TRUNCATED, False),
}


def scripted_payload(ending: str, crlf: bool) -> bytes:
    line_end = "\r\n" if crlf else "\n"
    frames = chat_stream(TEXT_WORDS, line_end=line_end)
    frames.insert(2, encode_comment("ping", line_end=line_end))
    if ending == "done":
        frames.append(encode_event("[DONE]", line_end=line_end))
    elif ending == "error":
        frames.append(encode_event(json.dumps({"error": ERROR_OBJ}), line_end=line_end))
    elif ending == "legacy":
        frames.append(LEGACY_ERROR_FRAME.replace(b"\n", line_end.encode()))
        frames.append(encode_event("[DONE]", line_end=line_end))
    return b"".join(frames)


def split(payload: bytes, cuts: list[int]) -> Iterator[bytes]:
    points = sorted({c % len(payload) for c in cuts} - {0})
    prev = 0
    for p in [*points, len(payload)]:
        yield payload[prev:p]
        prev = p


@settings(max_examples=20, deadline=None)
@given(
    ending=st.sampled_from(sorted(EXPECTED)),
    crlf=st.booleans(),
    cuts=st.lists(st.integers(min_value=1, max_value=100_000), max_size=16),
    pause=st.booleans(),
)
@pytest_twisted.ensureDeferred
async def test_chunking_does_not_change_the_verdict(
    ending: str, crlf: bool, cuts: list[int], pause: bool
) -> None:
    payload = scripted_payload(ending, crlf)
    actions: list[Action] = []
    for piece in split(payload, cuts):
        actions.append(("write", piece))
        if pause:
            actions.append(("wait", 0.001))
    # A server per example: hypothesis and function-scoped fixtures do not mix.
    srv = ScriptServer()
    try:
        srv.script([*actions, ("finish",)])
        r = await stream_request(srv.url(), BODY, timeout=5)
    finally:
        await srv.stop()
    outcome, done_after_error = EXPECTED[ending]
    assert r.outcome == outcome
    assert r.done_after_error == done_after_error
    assert r.text == "".join(TEXT_WORDS)
    assert r.comments == 1
    assert r.n_events == len(TEXT_WORDS) + 2 + (ending != "close") + (ending == "legacy")
    assert r.bytes_received == len(payload)
    assert not r.after_done and r.invalid_json == 0


@pytest_twisted.ensureDeferred
async def test_reasoning_content_and_get_without_body(server: ScriptServer) -> None:
    think = encode_event(
        json.dumps({"id": CID, "choices": [{"index": 0, "delta": {"reasoning_content": "hm"}}]})
    )
    server.script(
        [("write", think), ("wait", 0.02), *writes([chunk("ok"), DONE_FRAME]), ("finish",)]
    )
    r = await stream_request(server.url("/events"), None, method="GET", timeout=5.0)
    assert r.outcome == DONE
    assert r.reasoning == "hm" and r.text == "ok"
    assert r.t_first_token == r.event_times[0]
    seen = server.seen[0]
    assert seen.method == "GET" and seen.body == b"" and "content-type" not in seen.headers


@pytest_twisted.ensureDeferred
async def test_on_event_exception_propagates_and_aborts(server: ScriptServer) -> None:
    server.script([("write", chunk("a")), ("stall",)])

    def boom(ev: Event, t: float) -> None:
        raise KeyError("callback bug")

    with pytest.raises(KeyError, match="callback bug"):
        await run(server, on_event=boom)
    assert await ended(server) == "lost"
