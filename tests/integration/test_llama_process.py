"""LlamaServerProcess: the lifecycle machine on a Clock, then the real fake llama-server.

The first half drives the state machine with ``twisted.internet.task.Clock``, a fake
spawner and a scripted ``/health``; the second half spawns ``harness.fake_llama``
through the same code path a real llama-server takes (wrapper, process group,
``--port 0``, health poll, signals).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from automat import NoTransition
from twisted.internet import defer, task
from twisted.internet import error as ierror
from twisted.internet import reactor as _reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from zope.interface import implementer
from zope.interface.verify import verifyObject

import server_core
from server_core.aliases import LocalAlias
from server_core.errors import ContextError
from server_core.interfaces import IServerProcess
from server_core.llama_process import (
    _WRAPPER,
    LlamaServerProcess,
    PosixSpawner,
    _proc_stat,
    reap_orphans,
)

reactor: Any = _reactor
pytestmark = pytest.mark.timeout(30)

ROOT = str(Path(server_core.__file__).resolve().parent.parent)


def make_alias(
    name: str = "m", model: str = "/models/m.gguf", params: Sequence[str] = ()
) -> LocalAlias:
    return LocalAlias(
        name=name, model_path=model, source="user", request_params={}, context_params=tuple(params)
    )


# =====================================================================================
# The state machine on a Clock
# =====================================================================================


class FakeSpawner:
    """Records spawns and signals; the test plays the child through its protocol."""

    def __init__(self) -> None:
        self.protocols: list[ProcessProtocol] = []
        self.argvs: list[list[str]] = []
        self.signals: list[tuple[int, int]] = []
        self.fail = False

    def spawn(self, protocol: ProcessProtocol, argv: Sequence[str], env: Mapping[str, str]) -> int:
        if self.fail:
            raise OSError(2, "No such file or directory: '/opt/secret/llama-server'")
        self.protocols.append(protocol)
        self.argvs.append(list(argv))
        return 4_100_000 + len(self.protocols)  # above any real pid; never signalled

    def signal_group(self, pid: int, sig: int, *, leader_alive: bool) -> None:
        self.signals.append((pid, sig))

    # the child's side
    def say(self, line: str, fd: int = 2) -> None:
        self.protocols[-1].childDataReceived(fd, line.encode() + b"\n")

    def exit(self, code: int | None = 0, sig: int | None = None) -> None:
        proto = self.protocols[-1]
        reason: Failure
        if code == 0 and sig is None:
            reason = Failure(ierror.ProcessDone(0))
        else:
            reason = Failure(ierror.ProcessTerminated(exitCode=code, signal=sig))
        proto.processExited(reason)
        proto.processEnded(reason)


class FakeHealth:
    """``/health`` answers the test gives, one per poll."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, defer.Deferred[int | None]]] = []

    def __call__(self, base_url: str, timeout: float) -> defer.Deferred[int | None]:
        d: defer.Deferred[int | None] = defer.Deferred()
        self.calls.append((base_url, d))
        return d

    def answer(self, status: int | None) -> None:
        self.calls[-1][1].callback(status)


class Rig:
    def __init__(self, tmp_path: Path, **kw: Any) -> None:
        self.clock = task.Clock()
        self.spawner = FakeSpawner()
        self.health = FakeHealth()
        self.states: list[tuple[str, str]] = []
        kw.setdefault("start_timeout", 10.0)
        kw.setdefault("stop_grace", 3.0)
        self.proc = LlamaServerProcess(
            make_alias(),
            "/opt/secret/llama-server",
            ["-c", "2048"],
            reactor=self.clock,
            on_state=lambda p, old, new: self.states.append((old, new)),
            state_dir=tmp_path / "run",
            spawner=self.spawner,
            health_check=self.health,
            **kw,
        )

    def make_ready(self) -> defer.Deferred[None]:
        d = self.proc.start()
        self.spawner.say("srv  llama_server: server is listening on http://127.0.0.1:5555")
        self.health.answer(200)
        return d


def result_of(d: defer.Deferred[Any]) -> Any:
    """The result of a Deferred that must have fired (a failure is returned, not raised)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    return out[0]


def test_verify_interface(tmp_path: Path) -> None:
    assert verifyObject(IServerProcess, Rig(tmp_path).proc)


def test_argv_and_merged_flags(tmp_path: Path) -> None:
    proc = LlamaServerProcess(
        make_alias(params=["--ctx-size", "4096", "-ngl", "-1"]),
        "llama-server",
        ["-c", "2048", "--jinja", "--ctx_size=1024"],
        reactor=task.Clock(),
        state_dir=tmp_path,
    )
    assert proc.argv == [
        "llama-server",
        "--model",
        "/models/m.gguf",
        "--alias",
        "m",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--ctx-size",
        "4096",
        "--jinja",
        "-ngl",
        "-1",
    ]
    assert proc.state == "stopped" and proc.pid is None and proc.base_url is None


@pytest.mark.parametrize("flags", [["--port", "8080"], ["--host=0.0.0.0"], ["-m", "x.gguf"]])
def test_managed_flags_rejected(flags: list[str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sets --model, --alias, --host and --port itself"):
        LlamaServerProcess(make_alias(), "llama-server", flags, reactor=task.Clock())


def test_start_waits_for_listening_then_health(tmp_path: Path) -> None:
    rig = Rig(tmp_path, poll_interval=0.05)
    d = rig.proc.start()
    assert rig.proc.state == "starting" and not d.called
    assert rig.health.calls == []  # no port yet: nothing to poll
    rig.spawner.say("srv  load_model: loading model")
    rig.spawner.say("main: server is listening on http://127.0.0.1:5555 - starting the main loop")
    assert rig.proc.port == 5555
    assert rig.health.calls[-1][0] == "http://127.0.0.1:5555"
    rig.health.answer(503)  # loading
    assert len(rig.health.calls) == 1
    rig.clock.advance(0.05)
    assert len(rig.health.calls) == 2
    rig.health.answer(None)  # refused
    rig.clock.advance(0.05)
    rig.clock.advance(1.0)
    rig.health.answer(200)
    assert result_of(d) is None
    assert rig.proc.state == "ready"
    assert rig.proc.started_at == rig.clock.seconds()
    assert rig.states == [("stopped", "starting"), ("starting", "ready")]
    assert rig.proc.base_url == "http://127.0.0.1:5555"
    assert not rig.clock.getDelayedCalls()  # start timer and polls are gone


def test_concurrent_starts_share_one_spawn(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    ds = [rig.proc.start() for _ in range(3)]
    assert len(rig.spawner.protocols) == 1
    assert len({id(d) for d in ds}) == 3  # each caller its own Deferred
    rig.spawner.say("listening on http://127.0.0.1:5555")
    rig.health.answer(200)
    assert [result_of(d) for d in ds] == [None, None, None]
    assert result_of(rig.proc.start()) is None  # already ready: at once
    assert len(rig.spawner.protocols) == 1


def test_exit_during_start_fails_at_once_without_paths(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    d = rig.proc.start()
    exited = rig.proc.when_exited()
    rig.spawner.say("llama_model_load: error loading model: unknown model architecture: 'xyz'")
    rig.spawner.say("srv    load_model: failed to load model, '/opt/secret/models/m.gguf'")
    rig.spawner.exit(1)
    failure = result_of(d)
    assert isinstance(failure, Failure)
    err = failure.value
    assert isinstance(err, ContextError)
    assert err.status == 503
    assert err.message.startswith("model 'm' failed to start: exited with status 1 during start")
    assert "unknown model architecture" in err.message
    assert "/opt/secret" not in err.message and "secret" not in err.message
    assert rig.proc.state == "failed" and rig.proc.exit_status == 1
    assert rig.proc.last_error == err.message
    assert result_of(exited) == 1
    assert rig.states == [("stopped", "starting"), ("starting", "failed")]
    assert not rig.clock.getDelayedCalls()


def test_start_timeout_kills_then_fails(tmp_path: Path) -> None:
    rig = Rig(tmp_path, start_timeout=5.0, stop_grace=2.0)
    d = rig.proc.start()
    rig.spawner.say("listening on http://127.0.0.1:5555")
    rig.health.answer(503)
    rig.clock.advance(4.9)
    assert not d.called
    rig.clock.pump([0.1])
    pid = 4_100_001
    assert rig.spawner.signals == [(pid, signal.SIGTERM)]
    assert rig.proc.state == "stopping"
    assert not d.called  # fails only once the child is gone
    rig.clock.advance(2.0)  # ignores SIGTERM
    assert rig.spawner.signals[-1] == (pid, signal.SIGKILL)
    rig.spawner.exit(None, sig=9)
    failure = result_of(d)
    assert failure.value.message == "model 'm' failed to start: not ready after 5 s"
    assert rig.proc.state == "failed" and rig.proc.exit_status == -9
    assert rig.states == [("stopped", "starting"), ("starting", "stopping"), ("stopping", "failed")]
    assert not rig.clock.getDelayedCalls()


def test_join_a_failing_start(tmp_path: Path) -> None:
    rig = Rig(tmp_path, start_timeout=1.0)
    first = rig.proc.start()
    rig.clock.advance(1.0)  # timed out, being killed
    late = rig.proc.start()
    rig.spawner.exit(None, sig=15)
    assert result_of(first).check(ContextError) and result_of(late).check(ContextError)
    assert len(rig.spawner.protocols) == 1


def test_ready_child_crash(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.make_ready()
    exited = rig.proc.when_exited()
    rig.spawner.say("segfault!")
    rig.spawner.exit(None, sig=11)
    assert result_of(exited) == -11
    assert rig.proc.state == "failed"
    assert rig.states[-1] == ("ready", "failed")
    assert rig.proc.last_error == "model 'm' was killed by SIGSEGV unexpectedly"
    assert rig.proc.pid is None and rig.proc.port is None
    # The next start spawns a fresh child.
    d = rig.make_ready()
    assert result_of(d) is None and len(rig.spawner.protocols) == 2
    assert rig.proc.last_error is None


def test_stop_ready_then_idempotent(tmp_path: Path) -> None:
    rig = Rig(tmp_path, stop_grace=3.0)
    rig.make_ready()
    first, second = rig.proc.stop(), rig.proc.stop()
    assert rig.proc.state == "stopping"
    assert rig.spawner.signals == [(4_100_001, signal.SIGTERM)]  # one SIGTERM
    rig.clock.advance(1.0)
    rig.spawner.exit(0)
    assert result_of(first) == 0 and result_of(second) == 0
    assert result_of(rig.proc.stop()) == 0  # nothing runs: the last status, at once
    assert rig.proc.state == "stopped"
    assert rig.states[-2:] == [("ready", "stopping"), ("stopping", "stopped")]
    assert not rig.clock.getDelayedCalls()  # the SIGKILL timer was cancelled


def test_stop_while_starting(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    started = rig.proc.start()
    rig.spawner.say("listening on http://127.0.0.1:5555")
    poll = rig.health.calls[-1][1]
    stopped = rig.proc.stop()
    assert poll.called  # the in-flight health poll was cancelled
    assert not started.called
    rig.spawner.exit(None, sig=15)
    assert result_of(stopped) == -15
    failure = result_of(started)
    assert failure.value.message == "model 'm' was stopped while starting"
    assert rig.proc.state == "stopped"
    assert not rig.clock.getDelayedCalls()


def test_start_while_stopping_restarts_after_exit(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.make_ready()
    stopped = rig.proc.stop()
    again = rig.proc.start()
    assert len(rig.spawner.protocols) == 1  # not while the old child lives
    rig.spawner.exit(0)
    assert result_of(stopped) == 0
    assert rig.proc.state == "starting" and len(rig.spawner.protocols) == 2
    rig.spawner.say("listening on http://127.0.0.1:6666")
    rig.health.answer(200)
    assert result_of(again) is None and rig.proc.port == 6666


def test_stop_after_start_after_stop_wins(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.make_ready()
    rig.proc.stop()
    again = rig.proc.start()
    final = rig.proc.stop()
    rig.spawner.exit(0)
    assert result_of(again).check(ContextError)
    assert result_of(final) == 0
    assert rig.proc.state == "stopped" and len(rig.spawner.protocols) == 1


def test_spawn_failure(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.spawner.fail = True
    failure = result_of(rig.proc.start())
    msg = failure.value.message
    assert msg == "model 'm' failed to start: cannot run the llama-server executable"
    assert rig.proc.state == "failed"
    assert result_of(rig.proc.stop()) is None
    assert rig.proc.state == "stopped"  # stop acknowledges a failure
    assert rig.states == [("stopped", "starting"), ("starting", "failed"), ("failed", "stopped")]


def test_on_state_may_restart_and_may_raise(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    restarted: list[defer.Deferred[None]] = []

    def on_state(p: LlamaServerProcess, old: str, new: str) -> None:
        if (old, new) == ("ready", "failed") and not restarted:
            restarted.append(p.start())  # nested input: runs after the transition
        raise RuntimeError("listener bug")

    rig.proc.on_state = on_state
    rig.make_ready()
    rig.spawner.exit(1)
    assert rig.proc.state == "starting" and len(rig.spawner.protocols) == 2
    rig.spawner.say("listening on http://127.0.0.1:5555")
    rig.health.answer(200)
    assert result_of(restarted[0]) is None


def test_illegal_inputs_raise(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    with pytest.raises(NoTransition):
        rig.proc._machine.healthy()  # stopped: nothing to be healthy
    with pytest.raises(NoTransition):
        rig.proc._machine.exited(0)  # stopped: no child to exit
    rig.make_ready()
    with pytest.raises(NoTransition):
        rig.proc._machine.start_failed("late timer")
    assert rig.proc.state == "ready"


def test_logs_kept_and_followed(tmp_path: Path) -> None:
    rig = Rig(tmp_path, log_lines=3)
    followed: list[str] = []
    rig.proc.add_log_listener(followed.append)

    def broken(line: str) -> None:
        raise RuntimeError(line)

    rig.proc.add_log_listener(broken)  # a broken listener changes nothing
    rig.proc.start()
    for i in range(5):
        rig.spawner.say(f"line {i}", fd=1 + i % 2)
    rig.spawner.protocols[-1].childDataReceived(2, b"no newline yet")
    rig.proc.remove_log_listener(followed.append)
    rig.spawner.exit(1)  # the partial line is flushed at the end
    assert followed == [f"line {i}" for i in range(5)]
    assert rig.proc.recent_logs() == ["line 3", "line 4", "no newline yet"]


def test_run_state_file_lifecycle(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.proc.start()
    (path,) = (tmp_path / "run").glob("*.json")
    record = json.loads(path.read_text())
    assert record["pid"] == record["pgid"] == 4_100_001
    assert record["owner_pid"] == os.getpid()
    assert record["argv"] == rig.proc.argv
    rig.spawner.exit(1)
    assert list((tmp_path / "run").glob("*.json")) == []


# =====================================================================================
# The real fake llama-server as a child process
# =====================================================================================


def fake_executable(tmp_path: Path) -> str:
    """An executable that is the fake llama-server (shebang: this interpreter)."""
    script = tmp_path / "llama-server"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\nfrom harness.fake_llama.cli import main\nsys.exit(main())\n"
    )
    script.chmod(0o755)
    return str(script)


def real_proc(
    tmp_path: Path, faults: str = "", name: str = "m", **kw: Any
) -> tuple[LlamaServerProcess, list[tuple[str, str]]]:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    states: list[tuple[str, str]] = []
    params = ["--fault", faults] if faults else []
    proc = LlamaServerProcess(
        make_alias(name, str(model), params),
        fake_executable(tmp_path),
        ["-c", "256"],
        reactor=reactor,
        state_dir=tmp_path / "run",
        env={"PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")},
        on_state=lambda p, old, new: states.append((old, new)),
        **kw,
    )
    return proc, states


def within(d: defer.Deferred[Any], seconds: float) -> defer.Deferred[Any]:
    return d.addTimeout(seconds, reactor)


async def ensure_stopped(proc: LlamaServerProcess) -> None:
    await within(proc.stop(), 10)


def gone(pid: int) -> bool:
    st = _proc_stat(pid)
    return st is None or st[0] in ("Z", "X")


async def get_status(url: str) -> int:
    pool = HTTPConnectionPool(reactor, persistent=False)
    response = await Agent(reactor, pool=pool).request(b"GET", url.encode())
    await readBody(response)
    return int(response.code)


@implementer(ILogObserver)
class Captured:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event: LogEvent) -> None:
        if event.get("log_namespace") == "server_core.llama_process":
            self.lines.append(formatEvent(event))


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
        st = _proc_stat(pid)
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


# -- the spawn wrapper and orphans -----------------------------------------------------------


def test_wrapper_child_dies_with_its_parent(tmp_path: Path) -> None:
    """PDEATHSIG: SIGKILL the process that spawned the wrapper; the child gets SIGTERM."""
    parent_code = (
        "import os, subprocess, sys, time\n"
        f"wrapper = {_WRAPPER!r}\n"
        "child = subprocess.Popen([sys.executable, '-I', '-S', '-c', wrapper, str(os.getpid()),\n"
        "    sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(30)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 5
        # the wrapper calls setsid() before exec: wait for the child to lead its group
        while (st := _proc_stat(child)) is not None and st[1] != child:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert st is not None and st[1] == child
        parent.kill()
        parent.wait(5)
        while not gone(child):
            assert time.monotonic() < deadline, "the child outlived its parent"
            time.sleep(0.01)
    finally:
        parent.kill()
        parent.wait(5)


def _sleeper(*extra: str, ignore_term: bool = False) -> subprocess.Popen[str]:
    code = "import signal, sys, time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('up', flush=True)\ntime.sleep(30)\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *extra],
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "up\n"
    return proc


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _record(directory: Path, name: str, pid: int, argv: list[str], owner: int) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / f"{name}-{pid}.json"
    st = _proc_stat(pid)
    path.write_text(
        json.dumps(
            {
                "pid": pid,
                "pgid": pid,
                "owner_pid": owner,
                "owner_start": None,
                "child_start": st[2] if st else None,
                "argv": argv,
            }
        )
    )
    return path


def test_reap_orphans(tmp_path: Path) -> None:
    run = tmp_path / "run"
    dead_owner = _dead_pid()
    orphan = _sleeper("--model", "orphan.gguf")
    stubborn = _sleeper("--model", "stubborn.gguf", ignore_term=True)
    stranger = _sleeper("--model", "stranger.gguf")
    ours = _sleeper("--model", "ours.gguf")
    try:
        f_orphan = _record(run, "orphan", orphan.pid, list(orphan.args), dead_owner)  # type: ignore[arg-type]
        f_stubborn = _record(run, "stubborn", stubborn.pid, list(stubborn.args), dead_owner)  # type: ignore[arg-type]
        # pid recorded for another command line (a reused pid): left alone, file removed
        f_stranger = _record(
            run, "stranger", stranger.pid, ["llama-server", "--model", "x.gguf"], dead_owner
        )
        # a live owner (this process): not an orphan
        f_ours = _record(run, "ours", ours.pid, list(ours.args), os.getpid())  # type: ignore[arg-type]
        # a record whose child is long gone
        f_gone = _record(run, "gone", _dead_pid(), ["llama-server"], dead_owner)
        (run / "junk.json").write_text("{not json")

        t0 = time.monotonic()
        killed = reap_orphans(run, grace=0.5)
        assert sorted(killed) == sorted([orphan.pid, stubborn.pid])
        assert orphan.wait(5) == -signal.SIGTERM
        assert stubborn.wait(5) == -signal.SIGKILL
        assert time.monotonic() - t0 >= 0.5  # the stubborn one got its grace period
        assert stranger.poll() is None and ours.poll() is None
        assert not f_orphan.exists() and not f_stubborn.exists()
        assert not f_stranger.exists() and not f_gone.exists()
        assert not (run / "junk.json").exists()
        assert f_ours.exists()
        assert reap_orphans(tmp_path / "missing") == []
    finally:
        for p in (orphan, stubborn, stranger, ours):
            p.kill()
            p.wait(5)


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


@pytest_twisted.ensureDeferred
async def test_health_200_without_content_length_counts_as_ready() -> None:
    from twisted.internet.protocol import Factory, Protocol

    from server_core.llama_process import HttpHealthCheck

    class CloseDelimited(Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"status":"ok"}')  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]

    port = reactor.listenTCP(0, Factory.forProtocol(CloseDelimited), interface="127.0.0.1")
    try:
        check = HttpHealthCheck(reactor)
        assert await check(f"http://127.0.0.1:{port.getHost().port}", 5) == 200
    finally:
        await port.stopListening()
