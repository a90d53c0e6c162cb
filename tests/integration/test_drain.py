"""Shutdown drain in-process: every request in flight still ends honestly."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.web.client import HTTPConnectionPool

from harness.client import stream_request
from tests.integration.stack import reactor, stack
from tests.polling import until

pytestmark = pytest.mark.timeout(30)

CHAT = "/v1/chat/completions"


def body(stream: bool = True, n: int = 40) -> dict[str, Any]:
    return {"model": "fake", "messages": [{"role": "user", "content": "x"}], "stream": stream,
            "max_tokens": n, "ignore_eos": True}  # fmt: skip


@pytest.mark.parametrize("stream", [False, True])
@pytest_twisted.ensureDeferred
async def test_request_still_waiting_for_upstream_headers_gets_a_503(stream: bool) -> None:
    async with stack(server_yaml="  drain_timeout: 0.3") as s:
        before = s.fake.requests
        pending = defer.ensureDeferred(
            stream_request(s.url + CHAT, body(stream), headers={"X-Fault": "hang"}, timeout=10)
        )
        await until(lambda: s.fake.requests > before)  # it reached the (hanging) upstream
        await s.service.stopService()
        result = await pending
        assert result.outcome == "http_error" and result.status == 503, result.summary()
        assert "shutting down" in result.error["message"]
        assert result.headers.get("retry-after") == ["5"]


@pytest_twisted.ensureDeferred
async def test_new_request_on_a_keepalive_connection_during_the_drain_is_refused() -> None:
    async with stack(server_yaml="  drain_timeout: 2") as s:
        pool = HTTPConnectionPool(reactor, persistent=True)
        try:
            warm = await stream_request(s.url + CHAT, body(False, 2), pool=pool, timeout=5)
            assert warm.outcome == "done"
            first_event: defer.Deferred[None] = defer.Deferred()

            def on_event(event: Any, t: float) -> None:
                if not first_event.called:
                    first_event.callback(None)

            first = defer.ensureDeferred(
                stream_request(
                    s.url + CHAT,
                    body(n=8),
                    headers={"X-Fault": "token_delay=50ms"},
                    on_event=on_event,
                )
            )
            await first_event  # the stream is in flight
            stopping = s.service.stopService()
            late = await stream_request(s.url + CHAT, body(), pool=pool, timeout=10)
            assert late.status == 503 and "shutting down" in late.error["message"]
            assert (await first).outcome == "done"  # the stream in flight still completes
            await stopping
        finally:
            await pool.closeCachedConnections()
