"""A stream request that waits for its model's start gets SSE comments, never content.

In-process (treq's StubTreq through the real routes, router and delivery), every wait on
a ``Clock``: past the grace the response commits to its stream with comments about once a
second; the relay then continues on it, and any later failure is one error event in the
stream's dialect. A warm model, a fast start, a start failing within the grace and a
non-stream request answer exactly as they did before.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
import treq
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from server_core.aliases import DefaultAliasStore, LocalAlias
from server_core.errors import ContextError, UpstreamError
from server_core.metrics import RequestRecord
from server_core.reply import ReplyDelivery
from server_core.router_state import DefaultRouterState
from server_core.sse import Comment, Event, decode_all
from server_core.sse.dialects import CHAT, MESSAGES, NATIVE, RESPONSES, Frame, StreamDialect
from server_core.testing import CannedAgent, CannedResponse, FakeLease
from server_core.upstream import UpstreamClient
from server_core.web import OpenAIRoutes
from server_core.web.drain import InFlight, shutting_down
from tests.unit.shared_context import helpers
from tests.unit.sse.support import Request as SupportRequest

SSE = b"text/event-stream"
USER = [{"role": "user", "content": "hi"}]
CHAT_BODY = {"model": "one", "messages": USER, "stream": True}
WORDS = ["Hello", ",", " world", ": yes"]


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    payload = {"id": "c1", "object": "chat.completion.chunk", "created": 7, "model": "one",
               "choices": [choice]}  # fmt: skip
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


CHAT_STREAM = (
    _chunk({"role": "assistant", "content": None})
    + b"".join(_chunk({"content": w}) for w in WORDS)
    + _chunk({}, "stop")
    + b"data: [DONE]\n\n"
)


class HeldContext:
    """Leases that arrive (or fail) when the test says; counts acquires and cancels."""

    def __init__(self) -> None:
        self.waiting: list[defer.Deferred[FakeLease]] = []
        self.leases: list[FakeLease] = []
        self.cancelled = 0
        self.state: str | None = "starting"

    def acquire(self, alias: LocalAlias) -> defer.Deferred[FakeLease]:
        def cancel(_: Any) -> None:
            self.cancelled += 1

        d: defer.Deferred[FakeLease] = defer.Deferred(cancel)
        self.waiting.append(d)
        return d

    def grant(self) -> None:
        lease = FakeLease("one")
        self.leases.append(lease)
        self.waiting.pop(0).callback(lease)

    def fail(self, error: Exception) -> None:
        self.waiting.pop(0).errback(error)

    def process_for(self, name: str) -> Any:
        return None if self.state is None else type("P", (), {"state": self.state})()


class Call:
    """One request in flight: its response once headers are out, and what arrived when."""

    def __init__(self, stack: Stack, path: str, body: dict[str, Any]) -> None:
        self.clock = stack.clock
        self.response: Any = None
        self.chunks: list[tuple[float, bytes]] = []
        self.ended: Any = None
        d = stack.stub.request(
            "POST",
            "http://server" + path,
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        d.addCallback(self._headers)
        stack.stub.flush()

    def _headers(self, response: Any) -> None:
        self.response = response
        done = treq.collect(response, lambda b: self.chunks.append((self.clock.seconds(), b)))
        done.addBoth(lambda result: setattr(self, "ended", result or "done"))

    @property
    def raw(self) -> bytes:
        return b"".join(b for _, b in self.chunks)

    def comments(self) -> list[tuple[float, str]]:
        """(time, text) of each comment, by the chunk it arrived in."""
        found = []
        for at, data in self.chunks:
            found += [(at, c.text) for c in decode_all(data) if isinstance(c, Comment)]
        return found

    def events(self) -> list[Event]:
        return [e for e in decode_all(self.raw) if isinstance(e, Event)]


class Stack:
    def __init__(
        self, context: Any = None, clock: Clock | None = None, *, grace: float | None = 1.0
    ) -> None:
        self.clock = clock = clock or Clock()
        self.agent = CannedAgent(CannedResponse(200, CHAT_STREAM, SSE))
        self.context = context if context is not None else HeldContext()
        store = DefaultAliasStore(user=(LocalAlias("one", "/m/one.gguf", "user", {}),), created=1)
        self.router = router = DefaultRouterState(
            store,
            UpstreamClient(clock, agent=self.agent),
            context=self.context,
            delivery=ReplyDelivery(clock, start_grace=grace),
        )
        self.stub = StubTreq(OpenAIRoutes(router, clock=clock).resource())

    def call(self, path: str, body: dict[str, Any]) -> Call:
        return Call(self, path, body)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.stub.flush()

    def answer(self, body: bytes, code: int = 200, content_type: bytes = SSE) -> None:
        self.agent.response = CannedResponse(code, body, content_type)


def sdk_chat_text(raw: bytes) -> str:
    """What the openai SDK's own stream parser makes of ``raw`` as a chat stream."""
    client = openai.OpenAI(
        base_url="http://server/v1", api_key="x", max_retries=0, http_client=_replaying(raw)
    )
    stream = client.chat.completions.create(model="one", messages=USER, stream=True)  # type: ignore[arg-type]
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def _replaying(raw: bytes, http: Any = httpx) -> Any:
    """An HTTP client (of ``http``: the SDKs use httpx or httpx2) answering ``raw``."""

    def answer(request: Any) -> Any:
        return http.Response(200, headers={"content-type": "text/event-stream"}, content=raw)

    return http.Client(transport=http.MockTransport(answer))


# -- a cold start longer than the grace ------------------------------------------------


def test_a_cold_start_of_3_s_gets_comments_each_second_then_the_whole_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(helpers, "START_TIME", 3.0)
    context, clock, _ = helpers.make()
    stack = Stack(context, clock)
    call = stack.call("/v1/chat/completions", CHAT_BODY)
    stack.advance(0.9)
    assert call.response is None  # within the grace: not a byte, as before
    for step in (0.1, 1.0, 1.0, 1.0):
        stack.advance(step)
    response = call.response
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["text/event-stream; charset=utf-8"]
    assert call.comments() == [
        (1.0, "loading model 'one' (1 s, starting)"),
        (2.0, "loading model 'one' (2 s, starting)"),
    ]
    assert call.ended == "done"
    relayed = [e.data for e in call.events()]
    assert relayed[-1] == "[DONE]" and len(relayed) == len(WORDS) + 3
    assert call.raw.endswith(CHAT_STREAM)  # the upstream's stream, byte for byte after them
    assert b"data: :" not in call.raw and b"loading" not in b"".join(
        e.data.encode() for e in call.events()
    )
    assert sdk_chat_text(call.raw) == "".join(WORDS)  # the comments are invisible to it
    assert [row["in_flight"] for row in context.running()] == [0]  # the lease went back


def test_a_queue_wait_on_a_busy_ready_model_says_so() -> None:
    stack = Stack()
    stack.context.state = "ready"
    call = stack.call("/v1/chat/completions", CHAT_BODY)
    stack.advance(1.0)
    stack.context.state = None
    stack.advance(1.0)
    assert [text for _, text in call.comments()] == [
        "waiting for model 'one' (1 s, ready)",
        "loading model 'one' (2 s, queued)",
    ]
    stack.context.grant()
    stack.stub.flush()
    assert call.ended == "done" and sdk_chat_text(call.raw) == "".join(WORDS)
    assert [lease.released for lease in stack.context.leases] == [1]


# -- failures once committed: one error event, in the stream's dialect ----------------

DIALECT_CALLS = [
    ("/v1/chat/completions", CHAT_BODY, CHAT),
    ("/v1/responses", {"model": "one", "input": "hi", "stream": True}, RESPONSES),
    ("/v1/messages", {"model": "one", "messages": USER, "max_tokens": 4, "stream": True},
     MESSAGES),
    ("/completion", {"model": "one", "prompt": "hi", "stream": True}, NATIVE),
]  # fmt: skip


def one_error_event(call: Call, dialect: StreamDialect) -> Any:
    """The stream ended, with its comments and exactly one event: the dialect's error."""
    assert call.response.code == 200 and call.ended == "done"
    assert call.comments() and all(t.startswith("loading model 'one'") for _, t in call.comments())
    (event,) = call.events()
    frame, payload = dialect.read(event)
    assert frame is Frame.ERROR
    assert b"[DONE]" not in call.raw
    return payload


@pytest.mark.parametrize(("path", "body", "dialect"), DIALECT_CALLS)
def test_a_start_failing_after_the_grace_is_one_error_event(
    path: str, body: dict[str, Any], dialect: StreamDialect
) -> None:
    stack = Stack()
    call = stack.call(path, body)
    stack.advance(1.0)
    stack.advance(1.0)
    stack.context.fail(ContextError("The model 'one' failed to start: exit 1"))
    stack.stub.flush()
    payload = one_error_event(call, dialect)
    assert "failed to start: exit 1" in json.dumps(payload)
    assert stack.agent.sent == []  # nothing went upstream
    stack.advance(5.0)
    assert len(call.comments()) == 2  # and the comments stopped with it


def test_the_sdks_read_the_error_event_as_an_error() -> None:
    raws = {}
    for path, body, _ in DIALECT_CALLS[:3]:
        stack = Stack()
        call = stack.call(path, body)
        stack.advance(1.5)
        stack.context.fail(ContextError("The model 'one' failed to start: exit 1"))
        stack.stub.flush()
        raws[path] = call.raw
    with pytest.raises(openai.APIError, match="failed to start"):
        sdk_chat_text(raws["/v1/chat/completions"])
    client = openai.OpenAI(
        base_url="http://server/v1",
        api_key="x",
        max_retries=0,
        http_client=_replaying(raws["/v1/responses"]),
    )
    (event,) = list(client.responses.create(model="one", input="hi", stream=True))
    assert event.type == "error" and "failed to start" in event.message
    messages = anthropic.Anthropic(
        base_url="http://server",
        api_key="x",
        max_retries=0,
        http_client=_replaying(raws["/v1/messages"], httpx2),
    )
    with pytest.raises(anthropic.APIError, match="failed to start"):
        list(messages.messages.create(model="one", messages=USER, max_tokens=4, stream=True))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "fragment"), [(500, "llama died"), (400, "exceeds the context size")]
)
def test_an_upstream_error_status_after_the_commit_is_one_error_event(
    status: int, fragment: str
) -> None:
    stack = Stack()
    error = {"code": status, "message": f"llama: {fragment}", "type": "server_error"}
    stack.answer(json.dumps({"error": error}).encode(), status, b"application/json")
    call = stack.call("/v1/chat/completions", CHAT_BODY)
    stack.advance(2.0)
    stack.context.grant()
    stack.stub.flush()
    payload = one_error_event(call, CHAT)
    assert fragment in payload["error"]["message"]
    assert [lease.released for lease in stack.context.leases] == [1]


def test_an_upstream_refusing_the_request_after_the_commit_is_one_error_event() -> None:
    stack = Stack()

    def refuse(*args: Any, **kw: Any) -> defer.Deferred[Any]:
        return defer.fail(UpstreamError("model 'one': connection refused"))

    stack.agent.request = refuse  # type: ignore[method-assign]
    call = stack.call("/v1/messages", DIALECT_CALLS[2][1])
    stack.advance(1.0)
    stack.context.grant()
    stack.stub.flush()
    payload = one_error_event(call, MESSAGES)
    assert payload["type"] == "error" and payload["error"]["type"] == "api_error"
    assert [lease.released for lease in stack.context.leases] == [1]


def test_a_whole_json_answer_to_a_committed_stream_is_one_error_event() -> None:
    stack = Stack()
    stack.answer(b'{"object":"chat.completion","choices":[]}', 200, b"application/json")
    call = stack.call("/v1/chat/completions", CHAT_BODY)
    stack.advance(1.0)
    stack.context.grant()
    stack.stub.flush()
    assert "whole body" in one_error_event(call, CHAT)["error"]["message"]


# -- what stays exactly as it was --------------------------------------------------------


def _warm(grace: float | None) -> tuple[int, list[tuple[bytes, list[bytes]]], bytes]:
    stack = Stack(grace=grace)
    context = stack.context
    context.acquire = lambda alias: defer.succeed(FakeLease("one"))  # type: ignore[method-assign]
    call = stack.call("/v1/chat/completions", CHAT_BODY)
    headers = sorted(
        (k, v) for k, v in call.response.headers.getAllRawHeaders() if k.lower() != b"date"
    )
    return call.response.code, headers, call.raw


def test_a_warm_model_answers_the_same_bytes_as_without_comments() -> None:
    assert _warm(1.0) == _warm(None)
    code, _, raw = _warm(1.0)
    assert code == 200 and raw == CHAT_STREAM and b":" not in raw.split(b"data")[0]


@pytest.mark.parametrize(
    ("path", "body", "shape"),
    [
        ("/v1/chat/completions", CHAT_BODY, "openai"),
        (DIALECT_CALLS[2][0], DIALECT_CALLS[2][1], "anthropic"),
    ],
)
def test_a_start_failing_within_the_grace_is_the_http_status_of_today(
    path: str, body: dict[str, Any], shape: str
) -> None:
    stack = Stack()
    call = stack.call(path, body)
    stack.advance(0.9)
    stack.context.fail(ContextError("The model 'one' failed to start: exit 1"))
    stack.stub.flush()
    assert call.response.code == 503
    assert call.response.headers.getRawHeaders("content-type") == ["application/json"]
    payload = json.loads(call.raw)
    assert payload["error"]["message"] == "The model 'one' failed to start: exit 1"
    assert (payload.get("type") == "error") == (shape == "anthropic")
    stack.advance(3.0)
    assert call.comments() == []


def test_a_fast_start_is_a_plain_stream() -> None:
    stack = Stack()
    call = stack.call("/v1/chat/completions", CHAT_BODY)
    stack.advance(0.99)
    stack.context.grant()
    stack.stub.flush()
    stack.advance(3.0)
    assert call.response.code == 200 and call.raw == CHAT_STREAM


@pytest.mark.parametrize(
    "body",
    [
        {"model": "one", "messages": USER},  # not a stream: its answer is one JSON body
        {"model": "one", "input": "hi", "stream": True},  # embeddings never stream
    ],
)
def test_requests_that_are_not_sse_streams_wait_in_silence(body: dict[str, Any]) -> None:
    stack = Stack()
    stack.answer(b'{"object":"list","data":[]}', 200, b"application/json")
    path = "/v1/embeddings" if "input" in body else "/v1/chat/completions"
    call = stack.call(path, body)
    stack.advance(5.0)
    assert call.response is None
    stack.context.grant()
    stack.stub.flush()
    assert call.response.code == 200 and json.loads(call.raw) == {"object": "list", "data": []}


# -- the client leaves, the drain gives up: the wait is cancelled, nothing leaks -----------


class DirectRequest(SupportRequest):
    """A request that, like Twisted's, sends its headers at the first write (once) and
    is marked disconnected before its ``notifyFinish`` errbacks run."""

    def __init__(self) -> None:
        super().__init__()
        self.startedWriting = False
        self._disconnected = False
        self.heads: list[tuple[int, list[bytes] | None]] = []

    def write(self, data: bytes) -> None:
        if not self.startedWriting:
            self.startedWriting = True
            self.heads.append(
                (self.responseCode, self.responseHeaders.getRawHeaders(b"content-type"))
            )
        super().write(data)

    def leave(self) -> None:
        self._disconnected = True
        self.processingFailed(Failure(ConnectionLost()))


def _respond(stack: Stack, request: DirectRequest, tracker: Any) -> defer.Deferred[Any]:
    return defer.ensureDeferred(
        stack.router.respond(request, "/chat/completions", CHAT_BODY, tracker)
    )


@pytest.mark.parametrize("klein_cancels_first", [True, False])
def test_a_client_leaving_during_the_wait_cancels_it_and_leaks_no_lease(
    monkeypatch: pytest.MonkeyPatch, klein_cancels_first: bool
) -> None:
    monkeypatch.setattr(helpers, "START_TIME", 3.0)
    context, clock, _ = helpers.make()
    stack = Stack(context, clock)
    request = DirectRequest()
    handler: list[defer.Deferred[Any]] = []
    if klein_cancels_first:  # as Klein does: the handler is cancelled when the client goes
        request.notifyFinish().addErrback(lambda _: handler[0].cancel())
    handler.append(_respond(stack, request, InFlight()))
    clock.advance(1.5)
    assert request.heads == [(200, [b"text/event-stream; charset=utf-8"])]
    request.leave()
    failures: list[Failure] = []
    handler[0].addErrback(failures.append)
    assert failures and failures[0].check(defer.CancelledError)
    written = len(request.written)
    clock.advance(10.0)
    assert len(request.written) == written and not request.finished  # nothing after it left
    assert stack.agent.sent == []  # the lease never came to this request
    (row,) = context.running()
    assert (row["state"], row["in_flight"], row["waiting"], row["requests"]) == ("ready", 0, 0, 0)


def test_a_drain_giving_up_on_a_committed_wait_ends_it_with_one_error_event() -> None:
    stack = Stack()
    request, in_flight = DirectRequest(), InFlight()
    handler = _respond(stack, request, in_flight)
    stack.clock.advance(2.0)
    in_flight.end_all(shutting_down())
    assert stack.context.cancelled == 1  # the acquire was given up
    handler.addErrback(lambda f: f.trap(defer.CancelledError))
    assert request.finished and len(request.heads) == 1
    events = [e for e in decode_all(b"".join(request.written)) if isinstance(e, Event)]
    (event,) = events
    assert CHAT.read(event)[0] is Frame.ERROR and "shutting down" in (event.data or "")


# -- what the metrics hear of a committed stream ----------------------------------------


def _recorded(request: DirectRequest) -> RequestRecord:
    record = RequestRecord("/v1/chat/completions", "POST", 0.0, "node")
    request.server_core_record = record  # type: ignore[attr-defined]  # as RecordingResource does
    return record


@pytest.mark.parametrize(
    ("upstream_status", "cause"), [(None, "start_failed"), (500, "upstream_status")]
)
def test_a_committed_stream_that_fails_is_counted_as_an_error_event(
    upstream_status: int | None, cause: str
) -> None:
    stack = Stack()
    request = DirectRequest()
    record = _recorded(request)
    handler = _respond(stack, request, InFlight())
    stack.clock.advance(1.0)
    assert request.responseHeaders.getRawHeaders(b"x-served-by") == [b"node/one"]
    if upstream_status is None:
        stack.context.fail(ContextError("The model 'one' failed to start: exit 1"))
    else:
        stack.answer(b'{"error":{"message":"llama died"}}', upstream_status, b"application/json")
        stack.context.grant()
    assert handler.called and handler.result is None
    record.finished(request.responseCode or 200, False)
    assert (record.ending, record.cause, record.stream) == ("error_event", cause, True)
    assert (record.model, record.alias) == ("one", "one")
