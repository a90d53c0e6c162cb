"""Transparent to llama-server (issue 11), in-process: native routes, un-prefixed OpenAI
paths, the default model, extra alias names, and upstream 4xx/501 relayed as they are."""

from __future__ import annotations

import json
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

from server_core.aliases import DefaultAliasStore, LocalAlias
from server_core.reply import ReplyDelivery
from server_core.router_state import DefaultRouterState
from server_core.testing import CannedAgent, CannedResponse, FakeLease
from server_core.upstream import UpstreamClient
from server_core.web import OpenAIRoutes

BASE = "http://127.0.0.1:5555"


class Context:
    """Hands out FakeLeases and records which alias object each was for."""

    def __init__(self) -> None:
        self.acquired: list[LocalAlias] = []
        self.leases: list[FakeLease] = []

    def acquire(self, alias: LocalAlias) -> defer.Deferred[FakeLease]:
        self.acquired.append(alias)
        lease = FakeLease(alias.name, BASE)
        self.leases.append(lease)
        return defer.succeed(lease)


def local(name: str, *names: str) -> LocalAlias:
    return LocalAlias(name, f"/m/{name}.gguf", "user", {}, names=names)


class Stack:
    def __init__(
        self,
        response: CannedResponse | None = None,
        aliases: tuple[LocalAlias, ...] = (local("one"),),
        default_model: str | None = None,
    ) -> None:
        clock = Clock()
        self.agent = CannedAgent(response or CannedResponse(200, b'{"tokens":[1,2]}'))
        self.context = Context()
        store = DefaultAliasStore(user=aliases, created=1, default_model=default_model)
        router = DefaultRouterState(
            store,
            UpstreamClient(clock, agent=self.agent),
            context=self.context,  # type: ignore[arg-type]
            delivery=ReplyDelivery(clock),
        )
        self.stub = StubTreq(OpenAIRoutes(router, clock=clock).resource())

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if data is not None else {}
        d = self.stub.request(method, "http://server" + path, data=data, headers=headers)
        self.stub.flush()
        response = d.result
        content = response.content()
        self.stub.flush()
        return response.code, content.result

    def sent(self) -> tuple[str, str, dict[str, Any] | None]:
        method, uri, _, body = self.agent.sent[-1]
        return method.decode(), uri.decode(), json.loads(body) if body else None


@pytest.mark.parametrize(
    "path",
    [
        *("/completion", "/tokenize", "/detokenize", "/apply-template", "/infill", "/embedding"),
        *("/rerank", "/reranking", "/v1/rerank", "/v1/messages/count_tokens", "/completions"),
    ],
)
def test_native_post_routes_reach_the_same_path_of_the_alias(path: str) -> None:
    stack = Stack()
    body: dict[str, Any] = {"model": "one", "content": "hi"}
    if path == "/v1/messages/count_tokens":  # it counts a Messages request: validated as one
        body["messages"] = [{"role": "user", "content": "hi"}]
    status, raw = stack.call("POST", path, body)
    assert status == 200 and json.loads(raw) == {"tokens": [1, 2]}
    assert stack.sent() == ("POST", BASE + path, body)
    assert [lease.released for lease in stack.context.leases] == [1]


@pytest.mark.parametrize("path", ["/props", "/slots"])
def test_native_get_routes_take_the_model_from_the_query(path: str) -> None:
    stack = Stack(aliases=(local("one"), local("two")))
    status, _ = stack.call("GET", path + "?model=two")
    assert status == 200
    assert stack.sent() == ("GET", f"{BASE}{path}?model=two", None)
    assert [a.name for a in stack.context.acquired] == ["two"]


def test_unprefixed_openai_paths() -> None:
    stack = Stack(CannedResponse(200, b'{"object":"chat.completion","choices":[]}'))
    body = {"model": "one", "messages": [{"role": "user", "content": "hi"}]}
    status, _ = stack.call("POST", "/chat/completions", body)
    assert status == 200 and stack.sent()[1] == BASE + "/v1/chat/completions"
    status, raw = stack.call("GET", "/models")
    assert status == 200 and [m["id"] for m in json.loads(raw)["data"]] == ["one"]


def test_a_request_without_model_is_served_by_the_default() -> None:
    stack = Stack(aliases=(local("one"), local("two")), default_model="two")
    status, _ = stack.call("POST", "/v1/completions", {"prompt": "hi"})
    assert status == 200 and stack.sent()[2] == {"prompt": "hi", "model": "two"}
    status, _ = stack.call("GET", "/props")
    assert status == 200 and [a.name for a in stack.context.acquired] == ["two", "two"]


def test_the_only_alias_is_the_default() -> None:
    stack = Stack()
    status, _ = stack.call("POST", "/tokenize", {"content": "hi"})
    assert status == 200 and stack.sent()[2] == {"content": "hi", "model": "one"}


def test_without_a_default_a_missing_model_is_still_a_400() -> None:
    stack = Stack(aliases=(local("one"), local("two")))
    status, raw = stack.call("POST", "/v1/completions", {"prompt": "hi"})
    error = json.loads(raw)["error"]
    assert status == 400 and error["param"] == "model" and error["code"] == "missing"
    assert stack.agent.sent == []


def test_extra_names_are_one_alias_one_process_and_listed() -> None:
    names = ("gpt-4o-mini", "gpt-4o", "a", "b", "c", "d")
    stack = Stack(
        CannedResponse(200, b'{"object":"text_completion","model":"x","choices":[]}'),
        aliases=(local("one", *names), local("other")),
    )
    for name in ("one", *names):
        status, raw = stack.call("POST", "/v1/completions", {"model": name, "prompt": "hi"})
        assert status == 200 and json.loads(raw)["model"] == name  # the name asked for
        assert stack.sent()[2] == {"model": "one", "prompt": "hi"}
    # Seven names, one alias object: the context keys its slot by alias.name.
    assert {id(a) for a in stack.context.acquired} == {id(stack.context.acquired[0])}
    _, raw = stack.call("GET", "/v1/models")
    assert [m["id"] for m in json.loads(raw)["data"]] == ["one", *names, "other"]


def test_duplicate_extra_names_are_refused() -> None:
    with pytest.raises(ValueError, match="used twice"):
        DefaultAliasStore(user=[local("one", "x"), local("two", "x")])
    with pytest.raises(ValueError, match="used twice"):
        DefaultAliasStore(user=[local("one", "two"), local("two")])


@pytest.mark.parametrize("value", [[1, 2, 3], [[1, 2], [3]], ["a", 7], {"content": "x"}, 5])
def test_embeddings_input_is_llama_servers_to_judge(value: Any) -> None:
    stack = Stack(CannedResponse(200, b'{"object":"list","data":[]}'))
    status, _ = stack.call("POST", "/v1/embeddings", {"model": "one", "input": value})
    assert status == 200 and stack.sent()[2] == {"model": "one", "input": value}


@pytest.mark.parametrize(
    ("upstream", "status", "type_"),
    [
        (400, 400, "invalid_request_error"),
        (404, 404, "not_found_error"),
        (422, 422, "custom_type"),
        (501, 501, "not_supported_error"),
        (503, 503, "unavailable_error"),
        (500, 502, "server_error"),
    ],
)
def test_upstream_status_and_type_are_relayed(upstream: int, status: int, type_: str) -> None:
    err: dict[str, Any] = {"message": "nope", "code": upstream}
    if upstream == 422:
        err["type"] = "custom_type"
    if upstream == 501:
        err["type"] = "not_supported_error"
    stack = Stack(CannedResponse(upstream, json.dumps({"error": err}).encode()))
    got, raw = stack.call("POST", "/tokenize", {"model": "one", "content": "hi"})
    error = json.loads(raw)["error"]
    assert (got, error["type"]) == (status, type_)
    assert "nope" in error["message"]


SSE = b"text/event-stream"


def events(raw: bytes) -> list[Any]:
    return [json.loads(f[6:]) for f in raw.decode().split("\n\n") if f.startswith("data: ")]


def test_native_completion_stream_ends_with_its_stop_event() -> None:
    body = b'data: {"content":"a","stop":false}\n\ndata: {"content":"","stop":true}\n\n'
    stack = Stack(CannedResponse(200, body, SSE))
    status, raw = stack.call("POST", "/completion", {"model": "one", "stream": True})
    assert status == 200
    assert events(raw) == [{"content": "a", "stop": False}, {"content": "", "stop": True}]
    assert b"[DONE]" not in raw


def test_native_completion_stream_lost_before_stop_ends_with_one_error() -> None:
    stack = Stack(CannedResponse(200, b'data: {"content":"a","stop":false}\n\n', SSE))
    status, raw = stack.call("POST", "/completion", {"model": "one", "stream": True})
    got = events(raw)
    assert status == 200 and got[0] == {"content": "a", "stop": False}
    assert len(got) == 2 and got[1]["error"]["code"] == "upstream_stream_error"
    assert b"[DONE]" not in raw


def test_native_stream_flag_is_validated() -> None:
    stack = Stack()
    status, raw = stack.call("POST", "/completion", {"model": "one", "stream": "yes"})
    assert status == 400 and json.loads(raw)["error"]["param"] == "stream"


class HeldResponse(CannedResponse):
    """A response whose body arrives when the test says so."""

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(None)
        protocol.dataReceived(b"part one ")


def test_upstream_pass_through_holds_the_lease_while_the_body_streams() -> None:
    held = HeldResponse(200, b"", b"text/plain")
    stack = Stack(held)
    d = stack.stub.request("PUT", "http://server/upstream/one/a/b?c=1", data=b"raw body")
    stack.stub.flush()
    method, uri, _, sent_body = stack.agent.sent[-1]
    assert (method, uri, sent_body) == (b"PUT", f"{BASE}/a/b?c=1".encode(), b"raw body")
    (lease,) = stack.context.leases
    assert lease.released == 0  # headers and a first part are out; the body goes on
    held.protocol.dataReceived(b"part two")
    held.protocol.connectionLost(Failure(ResponseDone()))
    stack.stub.flush()
    response = d.result
    content = response.content()
    stack.stub.flush()
    assert (response.code, content.result) == (200, b"part one part two")
    assert lease.released == 1
