"""Request faults on non-stream completions."""

from __future__ import annotations

import pytest
import pytest_twisted

from harness.fake_llama import expected_text
from tests.harness.fake_llama._support import LONG, chat, start


@pytest_twisted.ensureDeferred
async def test_non_stream_faults() -> None:
    server = await start()
    try:
        body = {**LONG, "stream": False}
        res = await chat(server, body, fault="reset_after=3")
        assert res.status is None and res.ended == "reset"
        res = await chat(server, body, fault="error_after=3")
        assert res.status == 500 and res.json()["error"]["type"] == "server_error"
        res = await chat(server, body, fault="malformed_after=1")
        assert res.status == 200 and res.complete
        with pytest.raises(ValueError):
            res.json()
        res = await chat(server, body, fault="split_utf8,token_delay=1ms")
        assert res.json()["choices"][0]["message"]["content"] == "".join(expected_text(body)[0])
    finally:
        await server.stop()
