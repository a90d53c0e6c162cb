"""FakeLlamaProcess: spawn the fake, learn its port, stop it."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from harness.fake_llama import FakeLlamaProcess
from harness.fake_llama.rawhttp import RawResponse, raw_request
from tests.harness.fake_llama._support import free_port, health


@pytest_twisted.ensureDeferred
async def test_fixed_port_refused_then_503_then_200_then_graceful_exit() -> None:
    port = free_port()
    proc = FakeLlamaProcess(["--port", str(port)], faults="load_delay=700ms")
    proc.start()
    try:
        seen: list[str] = []
        while not seen or seen[-1] != "200":
            res: RawResponse = await health(port)
            state = "refused" if res.ended == "refused" else str(res.status)
            if not seen or seen[-1] != state:
                seen.append(state)
            assert proc.exit_status is None, proc.output
            await deferLater(reactor, 0.02)
        assert seen == ["refused", "503", "200"]
        assert await proc.started() == port
        assert proc.url == f"http://127.0.0.1:{port}"
        assert proc.stdout_lines == []  # like llama-server, everything is logged on stderr
        loading = next(i for i, x in enumerate(proc.output) if "loading model" in x)
        listening = next(i for i, x in enumerate(proc.output) if "listening on" in x)
        assert loading < listening
        assert await proc.stop() == 0  # first SIGTERM: graceful, exit 0
        assert any("cleaning up before exit" in line for line in proc.output)
    finally:
        await proc.stop(grace=1)


@pytest_twisted.ensureDeferred
async def test_port_zero_reports_port_once_ready_and_crash_after_exits_1() -> None:
    proc = FakeLlamaProcess(["-a", "child", "--seed", "4"], faults="load_delay=200ms")
    try:
        port = await proc.started()
        assert port > 0 and (await health(port)).status == 200
        exited = proc.when_exited()
        body = {
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
            "ignore_eos": True,
            "max_tokens": 8,
        }
        res = await raw_request(
            reactor, "127.0.0.1", port, "POST", "/v1/chat/completions", body,
            {"X-Fault": "crash_after=2"},
        )  # fmt: skip
        assert len(res.data) == 2 and not res.complete and res.ended in ("fin", "reset")
        assert await exited == 1
        assert (await health(port)).ended == "refused"
    finally:
        await proc.stop(grace=1)
