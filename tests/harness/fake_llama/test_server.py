"""FakeServer's lifecycle in-process: the loading phase."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor

from harness.fake_llama import FakeConfig, start_fake_server
from tests.harness.fake_llama._support import assert_error, req


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
