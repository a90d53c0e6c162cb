"""Native llama-server routes through server_core in front of the fake llama-server.

Real sockets both ways: server_core's external alias ``fake`` points at a fake
llama-server, and every request below is one llama.cpp clients send to llama-server.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.web.client import ResponseFailed

from harness.fake_llama.server import FakeConfig
from tests.integration.stack import reactor, stack

pytestmark = pytest.mark.timeout(30)


async def call(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    kw: dict[str, Any] = {"headers": {"content-type": "application/json", **(headers or {})}}
    if body is not None:
        kw["data"] = json.dumps(body).encode()
    response = await treq.request(method, url, reactor=reactor, **kw)
    return response.code, await response.content()


def events(raw: bytes) -> list[Any]:
    frames = raw.decode().replace("\r\n", "\n").split("\n\n")
    return [json.loads(f[6:]) for f in frames if f.startswith("data: ")]


@pytest_twisted.ensureDeferred
async def test_native_completion_stream_and_non_stream() -> None:
    async with stack() as s:
        body = {"model": "fake", "prompt": "hello", "n_predict": 5}
        status, raw = await call("POST", s.url + "/completion", body)
        whole = json.loads(raw)
        assert status == 200 and whole["stop"] is True and whole["content"]
        status, raw = await call("POST", s.url + "/completion", {**body, "stream": True})
        got = events(raw)
        assert status == 200 and got[-1]["stop"] is True
        assert all(e["stop"] is False for e in got[:-1]) and b"[DONE]" not in raw
        assert "".join(e["content"] for e in got) == whole["content"]


@pytest_twisted.ensureDeferred
async def test_native_stream_lost_before_stop_ends_with_one_error_event() -> None:
    async with stack() as s:
        body = {"model": "fake", "prompt": "hello", "n_predict": 8, "stream": True}
        for fault in ("close_after=2", "reset_after=2"):
            status, raw = await call(
                "POST", s.url + "/completion", body, headers={"X-Fault": fault}
            )
            got = events(raw)
            assert status == 200 and "error" in got[-1], (fault, raw)
            assert [e for e in got if "error" in e] == got[-1:]
            assert not any(e.get("stop") is True for e in got)


@pytest_twisted.ensureDeferred
async def test_native_text_routes() -> None:
    async with stack() as s:
        status, raw = await call("POST", s.url + "/tokenize", {"model": "fake", "content": "hi"})
        tokens = json.loads(raw)["tokens"]
        assert status == 200 and tokens
        status, raw = await call("POST", s.url + "/detokenize", {"model": "fake", "tokens": tokens})
        assert status == 200 and "content" in json.loads(raw)
        messages = [{"role": "user", "content": "hi"}]
        status, raw = await call(
            "POST", s.url + "/apply-template", {"model": "fake", "messages": messages}
        )
        assert status == 200 and "hi" in json.loads(raw)["prompt"]
        # The fake's "model" has no FIM tokens: llama-server's 501 keeps status and type.
        body = {"model": "fake", "input_prefix": "def f(", "input_suffix": ")", "n_predict": 3}
        status, raw = await call("POST", s.url + "/infill", body)
        assert status == 501 and json.loads(raw)["error"]["type"] == "not_supported_error"


@pytest_twisted.ensureDeferred
async def test_native_get_routes_by_query_model_and_by_default() -> None:
    async with stack() as s:
        status, raw = await call("GET", s.url + "/props?model=fake")
        assert status == 200 and "default_generation_settings" in json.loads(raw)
        status, raw = await call("GET", s.url + "/slots")  # the only alias serves
        assert status == 200 and isinstance(json.loads(raw), list)


@pytest_twisted.ensureDeferred
async def test_rerank_and_embeddings_on_an_embedding_server() -> None:
    async with stack(FakeConfig(alias="fake", embeddings=True)) as s:
        for path in ("/rerank", "/v1/rerank", "/reranking", "/v1/reranking"):
            # Started without --reranking: its 501, relayed as it is (it was a 404 here).
            body = {"model": "fake", "query": "q", "documents": ["a", "b"]}
            status, raw = await call("POST", s.url + path, body)
            error = json.loads(raw)["error"]
            assert (status, error["type"]) == (501, "not_supported_error"), (path, raw)
            assert "--reranking" in error["message"]
        # Token ids are an input llama-server accepts; server_core used to refuse them.
        body = {"model": "fake", "input": [[1, 2, 3]]}
        status, raw = await call("POST", s.url + "/v1/embeddings", body)
        assert status == 200 and json.loads(raw)["data"], raw
        # Its own 501 (no completions on an embeddings server) keeps status and type.
        status, raw = await call("POST", s.url + "/completion", {"model": "fake", "prompt": "x"})
        assert status == 501 and json.loads(raw)["error"]["type"] == "not_supported_error"


@pytest_twisted.ensureDeferred
async def test_unprefixed_openai_paths_and_omitted_model() -> None:
    async with stack() as s:
        messages = [{"role": "user", "content": "hi"}]
        status, raw = await call(
            "POST", s.url + "/chat/completions", {"messages": messages, "max_tokens": 3}
        )
        reply = json.loads(raw)
        assert status == 200 and reply["object"] == "chat.completion"
        assert reply["model"] == "fake"
        status, raw = await call("GET", s.url + "/models")
        assert status == 200 and [m["id"] for m in json.loads(raw)["data"]] == ["fake"]


@pytest_twisted.ensureDeferred
async def test_upstream_4xx_keeps_status_and_type() -> None:
    async with stack() as s:
        body = {"model": "fake", "messages": "not a list"}
        status, raw = await call("POST", s.url + "/apply-template", body)
        assert 400 <= status < 500, raw
        assert json.loads(raw)["error"]["type"] == "invalid_request_error"


@pytest_twisted.ensureDeferred
async def test_upstream_pass_through_any_method_behind_the_key() -> None:
    async with stack(server_yaml="  api_keys: [secret]") as s:
        key = {"authorization": "Bearer secret"}
        status, raw = await call("GET", s.url + "/upstream/fake/props")
        assert status == 401, raw
        status, raw = await call("GET", s.url + "/upstream/fake/props?x=1", headers=key)
        assert status == 200 and "default_generation_settings" in json.loads(raw)
        body = {"prompt": "hello", "n_predict": 4, "stream": True}
        status, raw = await call("POST", s.url + "/upstream/fake/completion", body, headers=key)
        got = events(raw)
        assert status == 200 and got[-1]["stop"] is True  # relayed byte for byte
        # The upstream's own answers pass as they are, 404s included.
        status, raw = await call("POST", s.url + "/upstream/fake/nope", {}, headers=key)
        assert status == 404, raw
        status, raw = await call("GET", s.url + "/upstream/nomodel/props", headers=key)
        assert status == 404 and json.loads(raw)["error"]["code"] == "model_not_found"


@pytest_twisted.ensureDeferred
async def test_upstream_pass_through_cut_short_is_cut_short_for_the_client() -> None:
    async with stack() as s:
        body = {"prompt": "hello", "n_predict": 12, "stream": True}
        response = await treq.post(
            s.url + "/upstream/fake/completion",
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json", "X-Fault": "reset_after=2"},
            reactor=reactor,
        )
        assert response.code == 200
        with pytest.raises(ResponseFailed):  # never a body that ends cleanly
            await response.content()
