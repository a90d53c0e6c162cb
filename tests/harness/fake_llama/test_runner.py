"""The fake as a process: signals, startup failures and exit codes, orphan exit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater

from harness.fake_llama import FakeLlamaProcess, ProcessExited
from tests.harness.fake_llama._support import free_port, health


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


UNREADABLE = "/nonexistent/dir/template.jinja"


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
        # llama-server checks the chat template before anything else starts.
        "unknown_builtin": FakeLlamaProcess(["--no-jinja", "--chat-template", "nosuch"]),
        "unreadable_file": FakeLlamaProcess(["--chat-template-file", UNREADABLE]),
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
        assert "error: the supplied chat template is not supported: nosuch" in out[
            "unknown_builtin"]  # fmt: skip
        assert "started without --jinja" in out["unknown_builtin"]
        assert (
            f'error while handling argument "--chat-template-file": error: failed to open file '
            f"'{UNREADABLE}'" in out["unreadable_file"]
        )
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
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3]))
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
