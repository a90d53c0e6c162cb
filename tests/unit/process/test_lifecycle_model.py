"""A hypothesis state machine plays callers, child and clock against LlamaServerProcess.

Whatever happens in whatever order, the public view read from the machine's state data
agrees with itself and with the ``on_state`` stream, no input the API feeds is refused,
and every caller's Deferred fires once everything has stopped. The liveness probe runs
too: its unanswered probes can fail a ready child as hung.
"""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet import defer

from server_core.process import STATES
from tests.unit.process.support import Rig


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._dir = tempfile.TemporaryDirectory()
        self.rig = Rig(
            Path(self._dir.name),
            start_timeout=5.0,
            stop_grace=2.0,
            liveness_interval=1.0,
            liveness_timeout=0.5,
            liveness_misses=2,
        )
        self.waiters: list[defer.Deferred[Any]] = []
        self.exited: set[int] = set()  # children (by spawn index) that were made to exit

    def _running_child(self) -> bool:
        n = len(self.rig.spawner.protocols)
        return n > 0 and n not in self.exited

    @rule()
    def start(self) -> None:
        self.waiters.append(self.rig.proc.start())

    @rule()
    def stop(self) -> None:
        self.waiters.append(self.rig.proc.stop())

    @rule()
    def when_exited(self) -> None:
        self.waiters.append(self.rig.proc.when_exited())

    @rule(fail=st.booleans())
    def spawn_fails(self, fail: bool) -> None:
        self.rig.spawner.fail = fail

    @precondition(lambda self: self._running_child())
    @rule(port=st.integers(1024, 65535))
    def say_listening(self, port: int) -> None:
        self.rig.spawner.say(f"main: server is listening on http://127.0.0.1:{port}")

    @precondition(lambda self: any(not d.called for _, d in self.rig.health.calls))
    @rule(status=st.sampled_from([200, 503, None]))
    def health_answers(self, status: int | None) -> None:
        pending = [d for _, d in self.rig.health.calls if not d.called]
        pending[-1].callback(status)

    @precondition(lambda self: self._running_child() and self.rig.proc.state == "starting")
    @rule()
    def child_gets_ready(self) -> None:
        """Listening and a 200 in one step: ready is reached often enough to go on from."""
        self.rig.health.frozen_on = None
        if self.rig.proc.port is None:
            self.say_listening(5555)
        pending = [d for _, d in self.rig.health.calls if not d.called]
        if pending:
            pending[-1].callback(200)

    @precondition(lambda self: self.rig.proc.state == "ready")
    @rule()
    def child_hangs(self) -> None:
        """Frozen while ready, for as long as the probe needs to give up on it."""
        self.child_freezes(True)
        for _ in range(3):
            self.time_passes(1.0)

    @rule(frozen=st.booleans())
    def child_freezes(self, frozen: bool) -> None:
        """From now on (or no longer) every ``/health`` poll times out on the clock."""
        self.rig.health.frozen_on = self.rig.clock if frozen else None

    @precondition(lambda self: self._running_child())
    @rule(code=st.sampled_from([0, 1, None]))
    def child_exits(self, code: int | None) -> None:
        self.exited.add(len(self.rig.spawner.protocols))
        if code is None:
            self.rig.spawner.exit(None, sig=signal.SIGKILL)
        else:
            self.rig.spawner.exit(code)

    @rule(seconds=st.sampled_from([0.05, 1.0, 3.0]))
    def time_passes(self, seconds: float) -> None:
        self.rig.clock.advance(seconds)

    @invariant()
    def the_view_agrees_with_itself(self) -> None:
        proc = self.rig.proc
        assert proc.state in STATES
        if proc.state == "stopped" or (proc.state == "failed" and proc.pid is None):
            assert proc.pid is None and proc.port is None and proc.base_url is None
        if proc.state == "failed" and proc.pid is not None:  # hung, SIGKILLed, not yet reaped
            assert self.rig.spawner.signals[-1] == (proc.pid, signal.SIGKILL)
            assert "stopped answering /health" in (proc.last_error or "")
        if proc.state == "ready":
            assert proc.pid is not None and proc.port is not None
            assert proc.base_url == f"http://127.0.0.1:{proc.port}"
            assert proc.started_at is not None and proc.last_error is None
        if proc.state in ("starting", "ready", "stopping"):
            assert proc.exit_status is None
        if proc.state == "failed":
            assert proc.last_error is not None

    @invariant()
    def on_state_is_one_unbroken_chain(self) -> None:
        states = self.rig.states
        olds = ["stopped"] + [new for _, new in states]
        assert [old for old, _ in states] == olds[:-1]
        assert all(old != new for old, new in states)
        assert olds[-1] == self.rig.proc.state

    def teardown(self) -> None:
        try:
            self.waiters.append(self.rig.proc.stop())
            for _ in range(3):  # a stop may have queued a restart behind it
                if self._running_child():
                    self.child_exits(0)
                self.rig.clock.advance(10.0)
                if self.rig.proc.state in ("stopped", "failed"):
                    self.waiters.append(self.rig.proc.stop())
            assert self.rig.proc.state == "stopped"
            assert all(d.called for d in self.waiters)
            for d in self.waiters:
                d.addErrback(lambda f: None)  # start failures are expected outcomes
        finally:
            self._dir.cleanup()


Lifecycle.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_lifecycle_model = Lifecycle.TestCase
