"""Tests for harness.netfault._cli: the ``netfault`` console script, in process and as
``python -m harness.netfault``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import pytest_twisted
import treq
from twisted.internet.defer import Deferred
from twisted.internet.error import (
    ProcessDone,
    ProcessTerminated,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool

from harness.netfault import (
    main,
    parse_address,
)
from tests.harness.netfault.support import Env, reactor

pytestmark = pytest.mark.timeout(20)


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_address("[::1]:0") == ("::1", 0)
    for bad in ("127.0.0.1", ":80", "host:x", "host:70000"):
        with pytest.raises(ValueError):
            parse_address(bad)


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.netfault", *args],
        capture_output=True,
        text=True,
        timeout=15,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--upstream"),
        (["--upstream", "localhost"], "expected HOST:PORT"),
        (["--upstream", "127.0.0.1:99999"], "0..65535"),
        (["--upstream", "127.0.0.1:1", "--toxic", "warp"], "unknown toxic type"),
        (["--upstream", "127.0.0.1:1", "--toxic", "latency:sideways"], "stream must be"),
        (["--upstream", "127.0.0.1:1", "--toxic", "latency::latency=-3"], ">= 0"),
        (["--upstream", "127.0.0.1:1", "--toxic", "latency", "--toxic", "latency"], "duplicate"),
        (["--upstream", "127.0.0.1:1", "--seed", "x"], "--seed"),
    ],
)
def test_cli_rejects_bad_arguments_in_process(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_bad_arguments_subprocess_exit_2() -> None:
    result = _run_cli("--upstream", "127.0.0.1:1", "--toxic", "slicer::average_size=0")
    assert result.returncode == 2
    assert "average_size" in result.stderr and result.stdout == ""


def test_cli_port_in_use_exits_1() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run_cli("--listen", f"127.0.0.1:{port}", "--upstream", "127.0.0.1:1")
    assert result.returncode == 1
    assert "cannot listen" in result.stderr and result.stdout == ""


class LineReader(ProcessProtocol):
    def __init__(self, want: int) -> None:
        self.want = want
        self.buffer = b""
        self.lines: Deferred[list[str]] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self.stderr = b""

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        lines = self.buffer.decode().splitlines()
        if not self.lines.called and self.buffer.count(b"\n") >= self.want:
            self.lines.callback(lines)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        if not self.lines.called:
            self.lines.errback(AssertionError(f"exited early: {self.stderr!r}"))
        self.reason = reason
        self.ended.callback(None)


@pytest_twisted.ensureDeferred
async def test_cli_runs_proxy_with_toxic_and_control(env: Env) -> None:
    upstream = env.upstream()
    reader = LineReader(want=2)
    process = reactor.spawnProcess(
        reader,
        sys.executable,
        [
            sys.executable,
            "-m",
            "harness.netfault",
            "--upstream",
            f"127.0.0.1:{upstream}",
            "--toxic",
            "limit_data:downstream:bytes=3",
            "--seed",
            "9",
        ],
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        lines = await reader.lines
        assert lines[0].startswith("listening on 127.0.0.1:")
        assert lines[1].startswith("control on http://127.0.0.1:")
        port = int(lines[0].rsplit(":", 1)[1])
        control = lines[1].removeprefix("control on ")
        client = await env.connect(port)
        client.write(b"hello")
        await client.lost
        assert client.data == b"hel"
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = await treq.get(control + "/toxics", pool=pool)
        assert [t["type"] for t in await response.json()] == ["limit_data"]
    finally:
        process.signalProcess("TERM")
        await reader.ended
    reason = reader.reason
    assert reason is not None
    assert reason.check(ProcessDone, ProcessTerminated)
    assert getattr(reason.value, "exitCode", None) == 0, reader.stderr
