"""Request checks answered with llama-server's status codes and messages."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.harness.fake_llama._support import CHAT, assert_error, req, start


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
