"""fake-llama-server as a real child process: loading, ports, signals, exit codes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater

from harness.fake_llama import FakeLlamaProcess, ProcessExited
from harness.fake_llama.rawhttp import RawResponse, raw_request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health(port: int) -> Any:
    return raw_request(reactor, "127.0.0.1", port, "GET", "/health", idle_timeout=2.0)


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


@pytest_twisted.ensureDeferred
async def test_ignore_sigterm_forces_sigkill() -> None:
    proc = FakeLlamaProcess(faults="ignore_sigterm")
    try:
        port = await proc.started()
        proc.signal(signal.SIGTERM)
        # Nothing to await: the point is that nothing happens. Give it time to (not) die.
        await deferLater(reactor, 0.3)
        assert proc.running and (await health(port)).status == 200
        assert await proc.stop(grace=0.3) == -signal.SIGKILL
    finally:
        await proc.stop(grace=1)


@pytest_twisted.ensureDeferred
async def test_second_sigterm_exits_at_once() -> None:
    proc = FakeLlamaProcess(faults="shutdown_delay=20s")
    try:
        port = await proc.started()
        exited = proc.when_exited()
        proc.signal("TERM")
        await proc.wait_for_line("HTTP server stopped")
        assert (await health(port)).ended == "refused"  # stopped listening, still alive
        assert proc.running
        proc.signal("TERM")
        assert await exited == 1
        assert "Received second interrupt, terminating immediately." in proc.output
    finally:
        await proc.stop(grace=1)


@pytest_twisted.ensureDeferred
async def test_startup_failures_exit_1_with_llama_server_messages() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    busy_port = taken.getsockname()[1]
    procs = {
        "crash_on_load": FakeLlamaProcess(faults="crash_on_load=150ms"),
        "missing": FakeLlamaProcess(["-m", "/nonexistent/dir/model.gguf"]),
        "bind_fail": FakeLlamaProcess(faults="bind_fail"),
        "port_taken": FakeLlamaProcess(["--port", str(busy_port)]),
        "bad_flag": FakeLlamaProcess(["--port", "eighty"]),
    }
    try:
        results = await gatherResults(
            [p.started().addErrback(lambda f: f.value) for p in procs.values()]
        )
        for name, result in zip(procs, results, strict=True):
            assert isinstance(result, ProcessExited), name
            assert result.status == 1, (name, result.output)
        out = {name: "\n".join(p.output) for name, p in procs.items()}
        assert "exiting due to model loading error" in out["crash_on_load"]
        assert "failed to open GGUF file '/nonexistent/dir/model.gguf'" in out["missing"]
        assert "exiting due to model loading error" in out["missing"]
        assert "couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 0" in out["bind_fail"]
        assert (
            f"couldn't bind HTTP server socket, hostname: 127.0.0.1, port: {busy_port}"
            in (out["port_taken"])
        )
        assert 'error while handling argument "--port"' in out["bad_flag"]
    finally:
        taken.close()
        for p in procs.values():
            await p.stop(grace=1)


@pytest_twisted.ensureDeferred
async def test_sigterm_during_load_kills_at_once() -> None:
    port = free_port()
    proc = FakeLlamaProcess(["--port", str(port)], faults="never_ready")
    try:
        proc.start()
        await proc.wait_for_line("never finish loading")
        res = await health(port)
        assert res.status == 503
        # llama-server has no handler yet while loading: the signal's default action.
        assert await proc.stop(grace=2) == -signal.SIGTERM
        with pytest.raises(ProcessExited):
            await proc.started()
    finally:
        await proc.stop(grace=1)


def test_fake_exits_when_its_parent_dies_even_with_stderr_broken(tmp_path: Path) -> None:
    """A parent that dies leaves a broken stderr pipe; the fake must still exit."""
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    launcher = (
        "import os, subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-m', 'harness.fake_llama', '-m', sys.argv[1],"
        " '--port', '0'], stderr=subprocess.PIPE,"
        " env=dict(os.environ, FAKE_LLAMA_PARENT_PID=str(os.getpid())))\n"
        "print(p.pid, flush=True)\n"
        "while b'listening on' not in p.stderr.readline(): pass\n"  # fully up: now die
        "os._exit(0)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run(
        [sys.executable, "-c", launcher, str(model)], capture_output=True, text=True,
        env=env, timeout=30, check=True,
    )  # fmt: skip
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                return
        time.sleep(0.05)
    os.kill(pid, 9)
    raise AssertionError("the fake outlived its parent")


@pytest_twisted.ensureDeferred
async def test_bad_chat_templates_fail_at_start(tmp_path: Path) -> None:
    procs = {
        "unknown_builtin": FakeLlamaProcess(["--no-jinja", "--chat-template", "nosuch"]),
        "unreadable_file": FakeLlamaProcess(["--chat-template-file", str(tmp_path / "none")]),
    }
    try:
        results = await gatherResults(
            [p.started().addErrback(lambda f: f.value) for p in procs.values()]
        )
        for name, result in zip(procs, results, strict=True):
            assert isinstance(result, ProcessExited), name
            assert result.status == 1, (name, result.output)
        out = {name: "\n".join(p.output) for name, p in procs.items()}
        assert "error: the supplied chat template is not supported: nosuch" in out[
            "unknown_builtin"]  # fmt: skip
        assert "started without --jinja" in out["unknown_builtin"]
        assert (
            f'error while handling argument "--chat-template-file": error: failed to open file '
            f"'{tmp_path / 'none'}'" in out["unreadable_file"]
        )
    finally:
        for p in procs.values():
            await p.stop(grace=1)
