"""LlamaServerProcess on a Clock: the lifecycle's transitions, waiters and ``on_state``.

A fake spawner plays the child and a scripted ``/health`` answers the polls
(``tests.unit.process.support``); the real child process is in
``tests/integration/process/``.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from automat import NoTransition
from twisted.internet import defer
from twisted.python.failure import Failure

from server_core.errors import ContextError
from server_core.process import LlamaServerProcess
from tests.unit.process.support import Rig, result_of


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
