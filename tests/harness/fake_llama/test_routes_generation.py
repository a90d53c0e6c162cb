"""Generation routes: chat, OpenAI and native completions, embeddings (shapes)."""

from __future__ import annotations

import json

import pytest_twisted

from harness.fake_llama import expected_text
from tests.harness.fake_llama._support import CHAT, assert_error, req, start


@pytest_twisted.ensureDeferred
async def test_chat_stream_shape_and_determinism() -> None:
    server = await start(alias="served-alias", seed=3)
    try:
        body = {**CHAT, "model": "whatever-the-client-says", "stream": True}
        res = await req(server, "POST", "/v1/chat/completions", body)
        assert res.status == 200 and res.complete
        assert res.header("content-type") == "text/event-stream"
        assert res.header("transfer-encoding") == "chunked"
        assert res.data[-1] == "[DONE]"
        chunks = [json.loads(d) for d in res.data[:-1]]
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
        assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
        assert {c["model"] for c in chunks} == {"served-alias"}
        assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
        assert all("created" in c and "system_fingerprint" in c for c in chunks)
        final = chunks[-1]
        assert final["choices"][0]["delta"] == {} and final["choices"][0]["finish_reason"] == "stop"
        assert "timings" in final and "usage" not in final
        content = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
        assert (content, "stop") == expected_text(body, seed=3)
        assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])

        # Same request, same text; non-stream gives the same text too.
        again = await req(server, "POST", "/v1/chat/completions", body)
        assert [json.loads(d)["choices"][0]["delta"].get("content") for d in again.data[1:-2]] == (
            content
        )
        plain = (await req(server, "POST", "/v1/chat/completions", {**CHAT, "seed": None})).json()
        assert plain["object"] == "chat.completion" and plain["model"] == "served-alias"
        assert plain["choices"][0]["message"] == {"role": "assistant", "content": "".join(content)}
        assert plain["choices"][0]["finish_reason"] == "stop"
        assert plain["usage"] == {
            "completion_tokens": len(content),
            "prompt_tokens": 5,
            "total_tokens": 5 + len(content),
            "prompt_tokens_details": {"cached_tokens": 0},
        }
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_include_usage_and_length_finish() -> None:
    server = await start()
    try:
        body = {**CHAT, "stream": True, "max_tokens": 3, "stream_options": {"include_usage": True}}
        res = await req(server, "POST", "/v1/chat/completions", body)
        chunks = [json.loads(d) for d in res.data[:-1]]
        assert res.data[-1] == "[DONE]"
        finish, usage = chunks[-2], chunks[-1]
        assert finish["choices"][0]["finish_reason"] == "length" and "timings" not in finish
        assert usage["choices"] == [] and "timings" in usage
        assert usage["usage"]["completion_tokens"] == 3 and usage["usage"]["prompt_tokens"] == 5
        assert len(chunks) == 1 + 3 + 2
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_text_completions_and_native_completion() -> None:
    server = await start()
    try:
        body = {"prompt": "once upon a time", "max_tokens": 4, "stream": True}
        tokens, finish = expected_text(body)
        res = await req(server, "POST", "/v1/completions", body)
        chunks = [json.loads(d) for d in res.data[:-1]]
        assert res.data[-1] == "[DONE]"
        assert [c["choices"][0]["text"] for c in chunks[:-1]] == tokens
        assert chunks[-1]["choices"][0]["finish_reason"] == finish == "length"
        assert chunks[-1]["usage"]["completion_tokens"] == 4
        assert {c["object"] for c in chunks} == {"text_completion"}
        plain = (await req(server, "POST", "/v1/completions", {**body, "stream": False})).json()
        assert plain["choices"][0]["text"] == "".join(tokens)

        native = {"prompt": "once upon a time", "n_predict": 4, "stream": True}
        res = await req(server, "POST", "/completion", native)
        events = [json.loads(d) for d in res.data]
        assert "[DONE]" not in res.data  # the native endpoint ends without [DONE]
        assert [e["content"] for e in events[:-1]] == tokens
        assert events[-1]["stop"] is True and events[-1]["stop_type"] == "limit"
        assert events[-1]["tokens_predicted"] == 4 and events[-1]["tokens_evaluated"] == 4
        plain = (await req(server, "POST", "/completion", {**native, "stream": False})).json()
        assert plain["content"] == "".join(tokens) and plain["stop"] is True
        msg = "[json.exception.out_of_range.403] key 'prompt' not found"
        assert_error(
            await req(server, "POST", "/completion", {}), 400, "invalid_request_error", msg
        )
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_embeddings_only_with_flag() -> None:
    server = await start()
    try:
        msg = "This server does not support embeddings. Start it with `--embeddings`"
        res = await req(server, "POST", "/v1/embeddings", {"input": "hello"})
        assert_error(res, 501, "not_supported_error", msg)
    finally:
        await server.stop()
    server = await start(embeddings=True, alias="embedder")
    try:
        res = await req(server, "POST", "/v1/embeddings", {"input": ["hello world", "bye"]})
        out = res.json()
        assert out["object"] == "list" and out["model"] == "embedder"
        assert [d["index"] for d in out["data"]] == [0, 1]
        vec = out["data"][0]["embedding"]
        assert abs(sum(x * x for x in vec) - 1.0) < 1e-6
        again = await req(server, "POST", "/v1/embeddings", {"input": "hello world"})
        assert again.json()["data"][0]["embedding"] == vec
        assert out["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
        msg = "This server does not support completions. Start it without `--embeddings`"
        res = await req(server, "POST", "/v1/chat/completions", CHAT)
        assert_error(res, 501, "not_supported_error", msg)
        res = await req(server, "POST", "/v1/embeddings", {"input": ""})
        assert_error(res, 400, "invalid_request_error", "Input content cannot be empty")
    finally:
        await server.stop()
