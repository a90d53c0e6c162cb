"""Reading chunks: text, reasoning and finish reason out of each dialect."""

from __future__ import annotations

import json

import pytest_twisted

from harness.client import (
    TRUNCATED,
    stream_request,
)
from server_core.sse import encode_event
from tests.harness.client.scripted import (
    ScriptServer,
    writes,
)


@pytest_twisted.ensureDeferred
async def test_llama_native_completion_content(server: ScriptServer) -> None:
    frames = [
        encode_event(json.dumps({"content": "to", "stop": False})),
        encode_event(json.dumps({"content": "ken", "stop": True, "stop_type": "limit"})),
    ]
    server.script([*writes(frames), ("finish",)])
    r = await stream_request(server.url("/completion"), {"prompt": "p"}, timeout=5.0)
    # llama-server's native endpoint ends without [DONE]: the client reports that honestly.
    assert r.outcome == TRUNCATED
    assert r.text == "token" and r.finish_reason == "length"
