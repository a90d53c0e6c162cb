"""LlamaServerProcess with a real child: the fake llama-server, and a crashing script.

Readiness after a load delay, a crash during load, a start that never becomes ready,
SIGKILL after an ignored SIGTERM, a killed ready child, a missing executable, one spawn
for concurrent starts, a stop while loading, and a crash noticed although a grandchild
holds the pipes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from server_core.errors import ContextError
from server_core.process import LlamaServerProcess, PosixSpawner
from server_core.process.procfs import proc_stat
from tests.integration.process.support import (
    Captured,
    ensure_stopped,
    get_status,
    gone,
    reactor,
    real_proc,
    within,
)
from tests.unit.process.support import make_alias

pytestmark = pytest.mark.timeout(30)


@pytest_twisted.ensureDeferred
async def test_load_delay_then_ready_group_logs_and_clean_stop(tmp_path: Path) -> None:
    captured = Captured()
    globalLogPublisher.addObserver(captured)
    proc, states = real_proc(tmp_path, "load_delay=1s")
    try:
        t0 = reactor.seconds()
        await within(proc.start(), 15)
        assert reactor.seconds() - t0 >= 1.0
        assert states == [("stopped", "starting"), ("starting", "ready")]
        assert proc.state == "ready" and proc.pid is not None and proc.base_url is not None
        pid = proc.pid
        assert await get_status(proc.base_url + "/health") == 200
        # its own process group: pid == pgid
        st = proc_stat(pid)
        assert st is not None and st[1] == pid
        assert st[1] != os.getpgrp()
        # logs captured and tagged with the alias
        assert any("listening on http://127.0.0.1:" in line for line in proc.recent_logs())
        assert any(line.startswith("[m] ") and "model loaded" in line for line in captured.lines)
        # run-state file while running
        (state_file,) = (tmp_path / "run").glob("*.json")
        assert json.loads(state_file.read_text())["pid"] == pid
        status = await within(proc.stop(), 10)
        assert status == 0  # the first SIGTERM shuts llama-server down gracefully
        assert states[-2:] == [("ready", "stopping"), ("stopping", "stopped")]
        assert gone(pid)
        assert list((tmp_path / "run").glob("*.json")) == []
    finally:
        globalLogPublisher.removeObserver(captured)
        await ensure_stopped(proc)


@pytest_twisted.ensureDeferred
async def test_crash_during_load_fails_at_once(tmp_path: Path) -> None:
    proc, states = real_proc(tmp_path, "crash_on_load", name="crashy", start_timeout=20)
    crash_seen: list[float] = []
    proc.add_log_listener(
        lambda line: crash_seen.append(reactor.seconds()) if "error loading model" in line else None
    )
    t0 = reactor.seconds()
    with pytest.raises(ContextError) as info:
        await within(proc.start(), 15)
    t_failed = reactor.seconds()
    assert t_failed - t0 < 5  # not the 20 s start timeout
    assert crash_seen and t_failed - crash_seen[0] < 1.0  # at once after the crash
    msg = info.value.message
    assert msg.startswith("model 'crashy' failed to start: exited with status 1 during start")
    assert str(tmp_path) not in msg and "/" not in msg
    assert info.value.status == 503
    assert proc.state == "failed" and proc.exit_status == 1
    assert states == [("stopped", "starting"), ("starting", "failed")]


@pytest_twisted.ensureDeferred
async def test_never_ready_times_out_and_leaves_no_orphan(tmp_path: Path) -> None:
    proc, states = real_proc(tmp_path, "never_ready", start_timeout=1.0, stop_grace=5)
    pids: list[int] = []
    proc.add_log_listener(lambda line: pids.append(proc.pid) if proc.pid else None)
    with pytest.raises(ContextError, match=r"^model 'm' failed to start: not ready after 1 s"):
        await within(proc.start(), 15)
    assert pids, "the child never printed anything"
    assert gone(pids[0])
    assert proc.state == "failed" and proc.pid is None
    assert states == [("stopped", "starting"), ("starting", "stopping"), ("stopping", "failed")]


@pytest_twisted.ensureDeferred
async def test_ignored_sigterm_gets_sigkill_after_grace(tmp_path: Path) -> None:
    proc, _ = real_proc(tmp_path, "ignore_sigterm", stop_grace=0.5)
    try:
        await within(proc.start(), 15)
        pid = proc.pid
        assert pid is not None
        t0 = reactor.seconds()
        status = await within(proc.stop(), 10)
        assert reactor.seconds() - t0 >= 0.5
        assert status == -signal.SIGKILL
        assert gone(pid)
        assert proc.state == "stopped"
    finally:
        await ensure_stopped(proc)


@pytest_twisted.ensureDeferred
async def test_ready_child_killed_is_noticed(tmp_path: Path) -> None:
    proc, states = real_proc(tmp_path)
    try:
        await within(proc.start(), 15)
        assert proc.pid is not None
        exited = proc.when_exited()
        os.kill(proc.pid, signal.SIGKILL)
        assert await within(exited, 5) == -signal.SIGKILL
        assert proc.state == "failed"
        assert states[-1] == ("ready", "failed")
        assert proc.last_error == "model 'm' was killed by SIGKILL unexpectedly"
    finally:
        await ensure_stopped(proc)


@pytest_twisted.ensureDeferred
async def test_missing_executable(tmp_path: Path) -> None:
    proc = LlamaServerProcess(
        make_alias(model=str(tmp_path / "m.gguf")),
        str(tmp_path / "no-such-dir" / "llama-server"),
        [],
        reactor=reactor,
        state_dir=tmp_path / "run",
    )
    assert (await within(proc.when_exited(), 1)) is None  # nothing ran yet
    with pytest.raises(ContextError) as info:
        await within(proc.start(), 10)
    msg = info.value.message
    assert msg.startswith("model 'm' failed to start: exited with status 127 during start")
    assert "cannot run llama-server: No such file or directory" in msg
    assert str(tmp_path) not in msg
    assert proc.state == "failed" and proc.exit_status == 127


class CountingSpawner(PosixSpawner):
    def __init__(self) -> None:
        super().__init__(reactor)
        self.count = 0

    def spawn(self, protocol: ProcessProtocol, argv: Sequence[str], env: Mapping[str, str]) -> int:
        self.count += 1
        return super().spawn(protocol, argv, env)


@pytest_twisted.ensureDeferred
async def test_concurrent_starts_spawn_once(tmp_path: Path) -> None:
    spawner = CountingSpawner()
    proc, _ = real_proc(tmp_path, "load_delay=200ms", spawner=spawner)
    try:
        results = await within(defer.gatherResults([proc.start() for _ in range(4)]), 15)
        assert results == [None] * 4
        assert spawner.count == 1
    finally:
        await ensure_stopped(proc)


@pytest_twisted.ensureDeferred
async def test_real_stop_while_loading(tmp_path: Path) -> None:
    proc, states = real_proc(tmp_path, "load_delay=10s")
    loading: defer.Deferred[None] = defer.Deferred()
    proc.add_log_listener(
        lambda line: (
            loading.callback(None) if "loading model" in line and not loading.called else None
        )
    )
    outcome: list[Any] = []
    proc.start().addBoth(outcome.append)
    await within(loading, 10)
    pid = proc.pid
    assert pid is not None
    status = await within(proc.stop(), 10)
    assert status == -signal.SIGTERM  # llama-server dies by SIGTERM while loading
    (failure,) = outcome  # failed by the time the stop is reported
    assert isinstance(failure, Failure) and isinstance(failure.value, ContextError)
    assert failure.value.message == "model 'm' was stopped while starting"
    assert proc.state == "stopped" and gone(pid)
    assert states == [("stopped", "starting"), ("starting", "stopping"), ("stopping", "stopped")]


ESCAPING_CHILD = """\
import os, socket, sys, threading, time, http.server
sock = socket.socket(); sock.bind(("127.0.0.1", 0)); sock.listen()
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "15"); self.end_headers()
        self.wfile.write(b'{"status":"ok"}')
    def log_message(self, *args): pass
server = http.server.HTTPServer(("127.0.0.1", 0), Health, bind_and_activate=False)
server.socket = sock
threading.Thread(target=server.serve_forever, daemon=True).start()
print(f"main: server is listening on http://127.0.0.1:{sock.getsockname()[1]}",
      file=sys.stderr, flush=True)
time.sleep(0.5)
if os.fork() == 0:
    os.setsid()  # leaves the process group, keeps our stdout/stderr pipes
    print(os.getpid(), file=open(os.environ["GRANDCHILD_PID_FILE"], "w"), flush=True)
    time.sleep(30)
    os._exit(0)
os._exit(139)
"""


@pytest_twisted.ensureDeferred
async def test_crash_is_noticed_even_if_a_grandchild_holds_the_pipes(tmp_path: Path) -> None:
    script = tmp_path / "llama-server"
    script.write_text(f"#!{sys.executable}\n" + ESCAPING_CHILD)
    script.chmod(0o755)
    pid_file = tmp_path / "grandchild.pid"
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    states: list[tuple[str, str]] = []
    proc = LlamaServerProcess(
        make_alias("m", str(model), []),
        str(script),
        [],
        reactor=reactor,
        state_dir=tmp_path / "run",
        stop_grace=1,
        env={"GRANDCHILD_PID_FILE": str(pid_file)},
        on_state=lambda p, old, new: states.append((old, new)),
    )
    try:
        await within(proc.start(), 15)
        exited = proc.when_exited()
        await within(exited, 5)  # fires at the leader's exit, not when the pipes close
        assert proc.state == "failed" and states[-1] == ("ready", "failed")
    finally:
        # The grandchild writes its pid right after the fork: wait for it, then kill it.
        for _ in range(200):
            if pid_file.exists() and pid_file.read_text().strip():
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        with contextlib.suppress(ProcessLookupError, ValueError, FileNotFoundError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        await ensure_stopped(proc)
