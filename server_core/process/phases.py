"""The data each state of a llama-server's lifecycle carries.

``LlamaServerProcess`` (``server_core.process.llama_process``) is an automat
``TypeMachineBuilder`` machine whose states are built with ``state(name, factory)``:
entering a state makes its data, and every transition out of it is handed that data.
Each class here is one state's data; ``name`` is the state as ``IServerProcess.state``
reports it. A state's data is built from the data of the state being left (the
``after`` constructors), so nothing outlives the state it belongs to: a child's pid,
port, output tail and waiters live in its ``Child`` record, which the running states
pass along and the ended states drop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Self

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from server_core.errors import ContextError
from server_core.process.health import LivenessProbe, ReadinessPoll

__all__ = [
    "Aborting",
    "Child",
    "Ended",
    "Failed",
    "Killing",
    "Live",
    "Phase",
    "Ready",
    "Starting",
    "Stopped",
    "Stopping",
    "fail_all",
]

TAIL_FOR_ERRORS = 30  # lines of the current run kept for the failure log entry


@dataclass(eq=False)
class Child:
    """One spawned llama-server: what lives exactly as long as that process."""

    argv: list[str]
    pid: int | None = None  # None until spawned; stays None when the spawn failed
    port: int | None = None  # from its "listening on" line
    unreaped: bool = False  # spawned, not yet reaped: its pid cannot have been reused
    status: int | None = None  # the exit status, once reaped
    exit_fed: bool = False  # the machine has been told of the exit
    state_file: str | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_FOR_ERRORS))
    exit_waiters: list[Deferred[int | None]] = field(default_factory=list)
    kill_timer: IDelayedCall | None = None

    def cancel_kill(self) -> None:
        """The SIGKILL after the grace period is not needed any more."""
        if self.kill_timer is not None and self.kill_timer.active():
            self.kill_timer.cancel()
        self.kill_timer = None


@dataclass(eq=False)
class Ended:
    """Nothing runs; what the last run left behind stays readable."""

    name: ClassVar[str] = "stopped"
    child: ClassVar[None] = None
    pid: ClassVar[None] = None
    port: ClassVar[None] = None
    exit_status: int | None = None
    last_error: str | None = None
    started_at: float | None = None

    @classmethod
    def after(cls, prev: Phase) -> Self:
        """The end of ``prev``: its exit status, error and start time carried over."""
        return cls(prev.exit_status, prev.last_error, prev.started_at)


class Stopped(Ended):
    """Stopped on request (or never started)."""

    name = "stopped"


class Failed(Ended):
    """The start failed or the server died; ``last_error`` says why."""

    name = "failed"


@dataclass(eq=False)
class Live:
    """A child exists (or its spawn is being attempted)."""

    name: ClassVar[str]
    child: Child
    last_error: str | None = None  # the previous run's, until this one is ready
    started_at: float | None = None
    # callers of start() waiting for this child to be ready
    start_waiters: list[Deferred[None]] = field(default_factory=list)

    @property
    def exit_status(self) -> int | None:
        """None while the child runs; its status at the moment its exit is handled."""
        return self.child.status

    @property
    def pid(self) -> int | None:
        """The child's pid (None when its spawn failed)."""
        return self.child.pid

    @property
    def port(self) -> int | None:
        """The child's port, once it said which."""
        return self.child.port

    def exit_waiters(self) -> list[Deferred[int | None]]:
        """Everyone to tell the exit status when the child is gone."""
        return self.child.exit_waiters

    def fire_exit(self) -> None:
        """The child is gone: every exit waiter gets its status."""
        for d in self.exit_waiters():
            d.callback(self.exit_status)


@dataclass(eq=False)
class Starting(Live):
    """Spawned, waiting for ``listening on`` and then ``/health`` 200."""

    name = "starting"
    readiness: ReadinessPoll | None = None

    @classmethod
    def begin(cls, argv: list[str], waiter: Deferred[None], prev: Phase) -> Starting:
        """A fresh child for ``argv``, about to be spawned."""
        return cls(Child(argv), last_error=prev.last_error, start_waiters=[waiter])

    def end_readiness(self) -> None:
        """The start is over, whichever way: no more polls, no deadline."""
        if self.readiness is not None:
            self.readiness.cancel()


@dataclass(eq=False)
class Ready(Live):
    """Answering requests since ``started_at``."""

    name = "ready"
    liveness: LivenessProbe | None = None

    @classmethod
    def after(cls, prev: Phase, now: float) -> Ready:
        """``prev`` (starting) became ready at ``now``; the last error is history."""
        assert isinstance(prev, Starting)
        return cls(prev.child, started_at=now)

    def end_liveness(self) -> None:
        """Leaving ready, whichever way: no more ``/health`` probes."""
        if self.liveness is not None:
            self.liveness.cancel()


@dataclass(eq=False)
class Stopping(Live):
    """SIGTERM sent to the group, SIGKILL after the grace period."""

    name = "stopping"
    stop_waiters: list[Deferred[int | None]] = field(default_factory=list)
    # start() while stopping: a new child once this one is gone
    restart_waiters: list[Deferred[None]] = field(default_factory=list)

    def exit_waiters(self) -> list[Deferred[int | None]]:
        """The callers of stop() first, then those of when_exited()."""
        return [*self.stop_waiters, *self.child.exit_waiters]

    @classmethod
    def after(cls, prev: Phase, waiter: Deferred[int | None]) -> Stopping:
        """``stop()`` on ``prev`` (starting or ready); a pending start will fail."""
        assert isinstance(prev, Live)
        return cls(
            prev.child,
            last_error=prev.last_error,
            started_at=prev.started_at,
            start_waiters=prev.start_waiters,
            stop_waiters=[waiter],
        )


@dataclass(eq=False)
class Aborting(Stopping):
    """A failed start's child being killed: reads as "stopping", ends as "failed"."""

    reason: str = ""

    @classmethod
    def failing(cls, prev: Phase, reason: str) -> Aborting:
        """``prev`` (starting) failed for ``reason``; its callers wait for the kill."""
        assert isinstance(prev, Starting)
        return cls(
            prev.child,
            last_error=prev.last_error,
            start_waiters=prev.start_waiters,
            reason=reason,
        )


@dataclass(eq=False)
class Killing(Stopping):
    """A ready child that stopped answering, SIGKILLed: reads as "failed" at once.

    The verdict is not delayed until the kernel has reaped it: the shared context hears
    "failed" now and serves the next request from a fresh child. The child stays here
    until its exit, so its run-state file and exit waiters are still looked after.
    """

    name = "failed"

    @classmethod
    def unresponsive(cls, prev: Phase) -> Killing:
        """``prev`` (ready) is to be killed; ``last_error`` is set by who kills it."""
        assert isinstance(prev, Ready)
        return cls(prev.child, started_at=prev.started_at)


Phase = Ended | Live


def fail_all(waiters: Iterable[Deferred[None]], message: str) -> None:
    """Fail every start waiter with ``ContextError(message)`` (a 503 for the client)."""
    for w in list(waiters):
        w.errback(ContextError(message))
