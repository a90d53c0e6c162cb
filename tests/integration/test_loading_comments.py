"""Over real HTTP, against a managed fake llama-server that loads slowly: a stream request
gets loading comments that keep an idle-timing client alive, then the whole answer."""

from __future__ import annotations

from pathlib import Path

import pytest_twisted

from harness.client import stream_request
from harness.fake_llama.generate import expected_text
from tests.integration.test_managed import chat, managed


@pytest_twisted.ensureDeferred
async def test_a_slow_start_keeps_the_stream_alive_with_comments_and_loses_nothing(
    tmp_path: Path,
) -> None:
    async with managed(tmp_path, {"slow": ["--fault", "load_delay=2500ms"]}) as m:
        # No byte for 2.5 s would be an idle timeout at 1.8 s; the comments come each second.
        result = await stream_request(
            m.url + "/v1/chat/completions", chat("slow"), timeout=30, idle_timeout=1.8
        )
        assert result.outcome == "done", result.summary()
        assert result.status == 200 and result.comments >= 1
        assert result.text == "".join(expected_text(chat("slow"))[0])
        assert result.t_headers is not None and result.t_headers - result.t_start < 2.0
        (entry,) = m.context.running()
        assert entry["state"] == "ready" and entry["in_flight"] == 0
