"""Faults every job applies before the first byte: status, hang."""

from __future__ import annotations

import pytest_twisted

from tests.harness.fake_llama._support import chat, start
from tests.polling import until


@pytest_twisted.ensureDeferred
async def test_status_and_hang_before_headers() -> None:
    server = await start()
    try:
        res = await chat(server, fault="status=503")
        assert res.status == 503
        assert res.json() == {
            "error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}
        }
        res = await chat(server, fault="status=429")
        assert res.status == 429 and res.json()["error"]["code"] == 429
        res = await chat(server, fault="hang", idle_timeout=0.3)
        assert res.raw == b"" and res.ended == "idle"
        await until(lambda: server.cancelled == 1)
    finally:
        await server.stop()
