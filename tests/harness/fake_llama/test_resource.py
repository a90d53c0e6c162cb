"""The resource's middleware: the API key gate."""

from __future__ import annotations

import pytest_twisted

from tests.harness.fake_llama._support import CHAT, assert_error, req, start


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
