"""A managed child frozen mid-stream (SIGSTOP): noticed by the liveness probe, killed, replaced.

server_core runs in-process and spawns the fake llama-server as a real child (the same
spawn, process group and ``/health`` as a real llama-server). Without the probe the
stream would wait for the upstream idle timeout (300 s) and the next request for the
header timeout (600 s); with it, both end within the configured detection time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from harness.client import StreamResult, stream_request
from tests.integration.process.support import Freezer, gone, reactor
from tests.integration.test_managed import Managed, chat, managed
from tests.polling import until

pytestmark = pytest.mark.timeout(60)

# noticed within interval + (misses - 1) * max(interval, timeout) + timeout = 1.25 s
LIVENESS = {"liveness_interval": 0.25, "liveness_timeout": 0.5, "liveness_misses": 2}
DETECTION = 1.25
SLACK = 1.5  # a loaded machine: the kill, the reap and the relay's ending


async def ask(m: Managed, max_tokens: int, **kw: Any) -> StreamResult:
    return await stream_request(
        m.url + "/v1/chat/completions", chat("m", max_tokens=max_tokens), timeout=20, **kw
    )


@pytest_twisted.ensureDeferred
async def test_frozen_child_mid_stream_ends_the_stream_and_is_replaced(tmp_path: Path) -> None:
    async with managed(tmp_path, {"m": ["--fault", "token_delay=50ms"]}, **LIVENESS) as m:
        assert (await ask(m, 2)).outcome == "done"  # the child is started on demand
        (entry,) = m.context.running()
        frozen_pid = entry["pid"]
        with Freezer(frozen_pid, after=3) as freezer:
            result = await ask(m, 400, on_event=freezer)
        assert freezer.at is not None, result.summary()
        assert result.outcome == "error_event", result.summary()
        took = reactor.seconds() - freezer.at
        assert took < DETECTION + SLACK, f"the stream ended {took:.2f} s after the freeze"
        assert not result.done_after_error and not result.after_error
        await until(lambda: gone(frozen_pid), timeout=5)

        again = await ask(m, 4)
        assert again.outcome == "done", again.summary()
        assert m.context.starts == 2  # a fresh child
        (row,) = m.context.running()
        assert row["pid"] != frozen_pid and row["state"] == "ready"
        assert row["last_error"] == (
            "model 'm' stopped answering /health (2 probes in a row: no answer within "
            "0.5 s); it was killed"
        )
        running = await stream_request(m.url + "/running", None, method="GET", timeout=10)
        assert running.json_body["data"][0]["last_error"] == row["last_error"]


@pytest_twisted.ensureDeferred
async def test_a_request_to_a_frozen_child_gets_an_answer_not_the_header_timeout(
    tmp_path: Path,
) -> None:
    async with managed(tmp_path, {"m": []}, **LIVENESS) as m:
        assert (await ask(m, 2)).outcome == "done"
        (entry,) = m.context.running()
        pid = entry["pid"]
        with Freezer(pid) as freezer:
            freezer(None, 0)  # frozen before the request
            t0 = reactor.seconds()
            result = await ask(m, 4)
        took = reactor.seconds() - t0
        assert took < DETECTION + SLACK, f"answered after {took:.2f} s: {result.summary()}"
        # leased by the frozen child, answered by an OpenAI-shaped 502 once it is killed
        assert result.outcome == "http_error" and result.status == 502, result.summary()
        assert result.error is not None and result.error["type"] == "upstream_error"
        await until(lambda: gone(pid), timeout=5)
        assert (await ask(m, 4)).outcome == "done"
