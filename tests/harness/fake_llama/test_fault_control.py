"""Which faults a request gets: --fault defaults, the X-Fault header, /_fault, p."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor

from harness.fake_llama.rawhttp import raw_request
from tests.harness.fake_llama._support import TOTAL_EVENTS, chat, start


@pytest_twisted.ensureDeferred
async def test_process_level_request_faults_and_live_control() -> None:
    server = await start("reset_after=2")
    try:
        assert len((await chat(server)).data) == 2  # --fault default applies
        # The X-Fault header replaces the defaults for one request ("" = none).
        assert len((await chat(server, fault="")).data) == TOTAL_EVENTS
        assert len((await chat(server, fault="drop_after=4")).data) == 4
        # A live set replaces the defaults until cleared.
        url = ("127.0.0.1", server.port)
        res = await raw_request(reactor, *url, "POST", "/_fault", "close_after=3")
        assert res.status == 200 and res.json()["live"] == "close_after=3"
        assert len((await chat(server)).data) == 3
        res = await raw_request(reactor, *url, "POST", "/_fault", {"spec": "stall_after=1"})
        assert res.json()["effective"] == "stall_after=1"
        assert len((await chat(server, idle_timeout=0.2)).data) == 1
        res = await raw_request(reactor, *url, "POST", "/_fault", "load_delay=1s")
        assert res.status == 400  # process faults cannot be set live
        res = await raw_request(reactor, *url, "DELETE", "/_fault")
        assert res.json()["live"] is None
        assert len((await chat(server)).data) == 2
        res = await raw_request(reactor, *url, "GET", "/_fault")
        assert res.json()["process"] == "" and res.json()["request_default"] == "reset_after=2"
        bad = await chat(server, fault="bogus")
        assert bad.status == 400 and "X-Fault" in bad.json()["error"]["message"]
    finally:
        await server.stop()


async def _hit_pattern(seed: int) -> list[bool]:
    server = await start("p=0.5,drop_after=1", seed=seed)
    try:
        out = []
        for _ in range(12):
            res = await chat(server, wait_close=False)
            out.append(len(res.data) == 1)
        return out
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_probability_hits_a_reproducible_subset() -> None:
    first = await _hit_pattern(seed=11)
    assert first == await _hit_pattern(seed=11)
    assert 0 < sum(first) < len(first)
    assert first != await _hit_pattern(seed=12)
