"""An alias's extra ``names``: seven names for one model are one llama-server, not seven."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer

from harness.client import stream_request
from tests.integration.test_managed import chat, managed

pytestmark = pytest.mark.timeout(60)

NAMES = ["gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo", "claude-3-5-haiku", "o1-mini", "local"]


@pytest_twisted.ensureDeferred
async def test_seven_names_share_one_process_and_each_reply_names_what_was_asked(
    tmp_path: Path,
) -> None:
    async with managed(tmp_path, {"qwen": ["-np", "4"]}, names={"qwen": NAMES}) as m:
        every = ["qwen", *NAMES]
        assert len(every) == 7
        results = await defer.gatherResults(
            [
                defer.ensureDeferred(
                    stream_request(m.url + "/v1/chat/completions", chat(name), timeout=30)
                )
                for name in every
            ]
        )
        for name, result in zip(every, results, strict=True):
            assert result.outcome == "done", result.summary()
            # Each stream names the model its client asked for, not the alias.
            assert {c.get("model") for c in result.chunks} == {name}, result.summary()
        (entry,) = m.context.running()
        assert entry["alias"] == "qwen" and entry["state"] == "ready"
        assert len(m.pids()) == 1
        listed = await stream_request(m.url + "/v1/models", None, method="GET", timeout=5)
        ids = [model["id"] for model in listed.json_body["data"]]
        assert sorted(ids) == sorted(every)
