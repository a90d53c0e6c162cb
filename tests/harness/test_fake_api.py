"""HTTP API of the fake llama-server (in-process, real sockets): shapes and errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from harness.fake_llama import (
    FakeConfig,
    FakeServer,
    Faults,
    TemplateError,
    expected_text,
    start_fake_server,
)
from harness.fake_llama.cli import parse_args
from harness.fake_llama.rawhttp import RawResponse, raw_request
from harness.fake_llama.templates import DEFAULT_TEMPLATE_SOURCE

CHAT = {"messages": [{"role": "user", "content": "tell me a story"}]}


async def start(**kw: Any) -> FakeServer:
    return await start_fake_server(FakeConfig(**kw), reactor)


async def req(
    server: FakeServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> RawResponse:
    return await raw_request(reactor, "127.0.0.1", server.port, method, path, body, headers, **kw)


def assert_error(res: RawResponse, status: int, type_: str, message: str | None = None) -> None:
    assert res.status == status, res.body
    assert res.header("content-type") == "application/json; charset=utf-8"
    err = res.json()["error"]
    assert err["code"] == status and err["type"] == type_
    if message is not None:
        assert err["message"] == message


@pytest_twisted.ensureDeferred
async def test_health_models_props_slots() -> None:
    server = await start(model_path=None, alias="tiny", ctx_size=1024, parallel=2)
    try:
        res = await req(server, "GET", "/health")
        assert res.status == 200 and res.json() == {"status": "ok"}
        assert res.header("server") == "llama.cpp"
        assert (await req(server, "GET", "/v1/health")).json() == {"status": "ok"}
        head = await req(server, "HEAD", "/health")
        assert head.status == 200 and head.body == b""
        for path in ("/v1/models", "/models"):
            models = (await req(server, "GET", path)).json()
            assert models["object"] == "list"
            [entry] = models["data"]
            assert entry["id"] == "tiny" and entry["object"] == "model"
            assert entry["owned_by"] == "llamacpp" and isinstance(entry["created"], int)
            assert entry["meta"]["n_ctx"] == 512  # -c split between -np slots
            assert models["models"][0]["name"] == "tiny"
        props = (await req(server, "GET", "/props")).json()
        assert props["total_slots"] == 2 and props["model_alias"] == "tiny"
        assert props["default_generation_settings"]["n_ctx"] == 512
        slots = (await req(server, "GET", "/slots")).json()
        assert [s["id"] for s in slots] == [0, 1]
        assert not any(s["is_processing"] for s in slots)
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_metrics_only_with_flag() -> None:
    server = await start()
    try:
        msg = "This server does not support metrics endpoint. Start it with `--metrics`"
        assert_error(await req(server, "GET", "/metrics"), 501, "not_supported_error", msg)
    finally:
        await server.stop()
    server = await start(metrics=True)
    try:
        await req(server, "POST", "/v1/chat/completions", CHAT)
        res = await req(server, "GET", "/metrics")
        assert res.status == 200
        text = res.body.decode()
        assert "# TYPE llamacpp:requests_processing gauge" in text
        assert "llamacpp:prompt_tokens_total 5" in text
        assert "fake_llama_requests_total 1" in text
        assert "fake_llama_cancelled_total 0" in text
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_api_key() -> None:
    server = await start(api_keys=("secret",))
    try:
        assert_error(
            await req(server, "POST", "/v1/chat/completions", CHAT),
            401,
            "authentication_error",
            "Invalid API Key",
        )
        bad = {"Authorization": "Bearer nope"}
        assert_error(await req(server, "GET", "/props", headers=bad), 401, "authentication_error")
        # An unknown route is checked for the key first, like llama-server's middleware.
        assert_error(await req(server, "GET", "/nope"), 401, "authentication_error")
        # Public endpoints need no key.
        assert (await req(server, "GET", "/health")).status == 200
        assert (await req(server, "GET", "/v1/models")).status == 200
        ok = await req(
            server, "POST", "/v1/chat/completions", CHAT, {"Authorization": "Bearer secret"}
        )
        assert ok.status == 200
        ok = await req(server, "POST", "/v1/chat/completions", CHAT, {"x-api-key": "secret"})
        assert ok.status == 200
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_bad_requests() -> None:
    server = await start(ctx_size=16)
    try:
        assert_error(await req(server, "GET", "/nope"), 404, "not_found_error", "File Not Found")
        # Wrong method on a known path is also a 404, as with cpp-httplib routing.
        assert_error(await req(server, "GET", "/v1/chat/completions"), 404, "not_found_error")
        post = "/v1/chat/completions"
        cases: list[tuple[Any, str]] = [
            ({"messages": 3}, "Expected 'messages' to be an array"),
            ({}, "'messages' is required"),
            ({"messages": [{"role": "user"}]}, "All non-assistant messages must contain 'content'"),
            ({"messages": [{"role": "user", "content": 5}]},
             "Expected 'content' to be a string or an array"),
            ({**CHAT, "n": 2}, "Only one completion choice is allowed"),
        ]  # fmt: skip
        for body, message in cases:
            assert_error(
                await req(server, "POST", post, body), 400, "invalid_request_error", message
            )
        assert_error(
            await req(server, "POST", "/v1/completions", {"max_tokens": 3}),
            400,
            "invalid_request_error",
            '"prompt" is required',
        )
        # llama-server answers unparsable JSON with 500 (nlohmann parse_error -> server_error).
        res = await req(server, "POST", post, "{not json")
        assert_error(res, 500, "server_error")
        assert res.json()["error"]["message"].startswith("[json.exception.parse_error.101]")
        # A prompt that does not fit the slot's context.
        long = {"messages": [{"role": "user", "content": "w " * 40}]}
        res = await req(server, "POST", post, {**long, "stream": True})
        assert_error(res, 400, "exceed_context_size_error")
        err = res.json()["error"]
        assert err["n_prompt_tokens"] == 41 and err["n_ctx"] == 16
        assert "exceeds the available context size" in err["message"]
    finally:
        await server.stop()


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


@pytest_twisted.ensureDeferred
async def test_tokenize_detokenize() -> None:
    server = await start()
    try:
        res = await req(server, "POST", "/tokenize", {"content": "river zzz river"})
        ids = res.json()["tokens"]
        assert len(ids) == 3 and ids[0] == ids[2] != ids[1]
        res = await req(server, "POST", "/detokenize", {"tokens": ids})
        assert res.json() == {"content": "river zzz river"}
        res = await req(server, "POST", "/tokenize", {"content": "a b", "with_pieces": True})
        assert [t["piece"] for t in res.json()["tokens"]] == ["a", "b"]
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_loading_phase_in_process() -> None:
    server = await start_fake_server(
        FakeConfig(faults="load_delay=300ms"), reactor, wait_ready=False
    )
    try:
        for path in ("/health", "/v1/models", "/nope"):
            res = await req(server, "GET", path)
            assert_error(res, 503, "unavailable_error", "Loading model")
        await server.when_ready()
        assert (await req(server, "GET", "/health")).json() == {"status": "ok"}
        assert any("listening on http://127.0.0.1:" in line for line in server.log_lines)
    finally:
        await server.stop()


# -- chat templates (--chat-template, --chat-template-file, --jinja / --no-jinja) ------


async def start_with_flags(*flags: str) -> FakeServer:
    opts, _ = parse_args(["--port", "0", *flags])
    return await start_fake_server(opts.to_config(Faults()), reactor)


async def prompt_tokens(server: FakeServer, question: str, **extra: Any) -> int:
    body = {"messages": [{"role": "user", "content": question}], **extra}
    res = await req(server, "POST", "/v1/chat/completions", body)
    if extra.get("stream"):
        return int(json.loads(res.data[-2])["usage"]["prompt_tokens"])
    return int(res.json()["usage"]["prompt_tokens"])


@pytest_twisted.ensureDeferred
async def test_chat_template_is_jinja_text_so_a_name_renders_as_itself() -> None:
    # Jinja is on by default: "gemma" is template text, every conversation is "gemma".
    server = await start_with_flags("--chat-template", "gemma")
    try:
        res = await req(server, "POST", "/apply-template", CHAT)
        assert res.status == 200 and res.json() == {"prompt": "gemma"}
        short = await prompt_tokens(server, "hi")
        long = await prompt_tokens(server, "what is the capital of France and why is it there")
        assert short == long == 1
        assert await prompt_tokens(server, "a b c d", stream=True, stream_options={
            "include_usage": True}) == 1  # fmt: skip
        assert (await req(server, "GET", "/props")).json()["chat_template"] == "gemma"
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_no_jinja_chat_template_is_a_builtin_name() -> None:
    server = await start_with_flags("--no-jinja", "--chat-template", "gemma")
    try:
        prompt = (await req(server, "POST", "/apply-template", CHAT)).json()["prompt"]
        assert "tell me a story" in prompt and prompt != "gemma"
        assert prompt.startswith("<start_of_turn>user\n")
        assert await prompt_tokens(server, "tell me a story") == len(prompt.split())
        assert (await req(server, "GET", "/props")).json()["chat_template"] == "gemma"
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_chat_template_file_with_jinja_tags_renders_the_messages(tmp_path: Path) -> None:
    template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{{ 'x' }}"
    path = tmp_path / "template.jinja"
    path.write_text(template, encoding="utf-8")
    server = await start_with_flags("--chat-template-file", str(path))
    try:
        prompt = (await req(server, "POST", "/apply-template", CHAT)).json()["prompt"]
        assert prompt == "user: tell me a story"  # the fake's stand-in for running Jinja
        assert await prompt_tokens(server, "tell me a story") == 5
        assert (await req(server, "GET", "/props")).json()["chat_template"] == template
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_default_template_and_generated_text_do_not_change() -> None:
    server = await start()
    plain = await start_with_flags("--chat-template", "plain words here")
    try:
        res = await req(server, "POST", "/apply-template", CHAT)
        assert res.json() == {"prompt": "user: tell me a story"}
        props = (await req(server, "GET", "/props")).json()
        assert props["chat_template"] == DEFAULT_TEMPLATE_SOURCE
        tokens, _ = expected_text(CHAT)
        for s in (server, plain):
            body = (await req(s, "POST", "/v1/chat/completions", CHAT)).json()
            assert body["choices"][0]["message"]["content"] == "".join(tokens)
        assert await prompt_tokens(plain, "tell me a story") == 3
    finally:
        await server.stop()
        await plain.stop()


@pytest_twisted.ensureDeferred
async def test_unknown_builtin_without_jinja_fails_in_process() -> None:
    with pytest.raises(TemplateError, match="not supported: nosuch"):
        await start_fake_server(FakeConfig(jinja=False, chat_template="nosuch"), reactor)
