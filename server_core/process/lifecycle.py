"""The lifecycle of one llama-server child: states, inputs, transitions (automat).

::

    stopped --start--> starting --/health 200--> ready --stop--> stopping --exit--> stopped
    starting --exit--> failed            (crash during load: fails the start at once)
    starting --timeout--> stopping* --exit--> failed   (*killed; reported as "stopping")
    starting --stop--> stopping --exit--> stopped     (the pending start fails)
    ready --exit--> failed               (crash: ``on_state`` sees ready -> failed)
    ready --unresponsive--> failed* --exit--> failed   (*SIGKILLed, not yet reaped)
    failed --start--> starting,  failed --stop--> stopped

An input a state does not accept raises ``NoTransition`` instead of corrupting anything.
The machine is the only source of state: its states carry their data
(``server_core.process.phases``), built by each state's factory on entry from the data
of the state being left. automat hands a state's data only to the transitions leaving
it, so the factories also leave it in ``Core.phase`` (``_entering``), where the
process reads ``state``, ``pid``, ``port`` and the rest; nothing else writes it.

This module says *when*; ``Core`` (``LlamaServerProcess``) does the work: spawn,
signal, log, fire waiters. Every transition that changes the reported state calls
``announce`` at the moment ``on_state`` has always been called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from automat import TypeMachineBuilder
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from server_core.process.phases import (
    Aborting,
    Ended,
    Failed,
    Killing,
    Live,
    Phase,
    Ready,
    Starting,
    Stopped,
    Stopping,
    fail_all,
)
from server_core.process.spawn import describe_exit

__all__ = ["MACHINE", "Core", "Inputs"]


class Inputs(Protocol):
    """Inputs of the lifecycle machine (all return None so they may nest)."""

    def start(self, waiter: Deferred[None]) -> None:
        """``start()`` was called; ``waiter`` fires once ready."""

    def stop(self, waiter: Deferred[int | None]) -> None:
        """``stop()`` was called; ``waiter`` fires with the exit status."""

    def listening(self, port: int) -> None:
        """The child logged the port it listens on."""

    def healthy(self) -> None:
        """``/health`` answered 200."""

    def start_failed(self, reason: str) -> None:
        """The start deadline passed."""

    def unresponsive(self, reason: str) -> None:
        """The ready child missed too many ``/health`` probes in a row."""

    def exited(self, status: int | None) -> None:
        """The child is gone (or could not be spawned: status None)."""


class Core(Protocol):
    """What the transitions ask of the process they belong to (``LlamaServerProcess``)."""

    alias: str
    reactor: IReactorTime
    phase: Phase  # the current state's data; written by the state factories only

    @property
    def argv(self) -> list[str]:
        """The child's command line."""

    @property
    def exit_status(self) -> int | None:
        """The last run's exit status."""

    def announce(self, old: str) -> None:
        """Tell ``on_state`` the reported state went from ``old`` to the current one."""

    def launch(self, old: str) -> None:
        """Spawn the child of the ``Starting`` state just entered (from ``old``)."""

    def listening_on(self, starting: Starting, port: int) -> None:
        """The starting child's port is known: poll its ``/health``."""

    def become_ready(self, starting: Starting) -> None:
        """``starting``'s child is ready: tell its waiters."""

    def terminate(self, old: Live) -> None:
        """SIGTERM the child of ``old``, SIGKILL after the grace period."""

    def fail_start(self, old: Live, reason: str) -> None:
        """The child of ``old`` is gone and its start failed for ``reason``."""

    def crashed(self, old: Ready) -> None:
        """The ready child of ``old`` died."""

    def kill_unresponsive(self, old: Ready, reason: str) -> None:
        """The ready child of ``old`` stopped answering: record ``reason``, SIGKILL it."""

    def finish_stop(self, old: Stopping) -> None:
        """The stopped child of ``old`` is gone: fire waiters, restart if asked."""


_P = ParamSpec("_P")
_D = TypeVar("_D", bound=Phase)
_E = TypeVar("_E", bound=Ended)


def _entering(
    make: Callable[Concatenate[Core, _P], _D],
) -> Callable[Concatenate[Inputs, Core, _P], _D]:
    """A state's data factory: ``make(proc, *input_args)`` builds the new state's data
    from ``proc.phase`` (still the state being left), which then becomes ``phase``."""

    def factory(m: Inputs, p: Core, /, *args: _P.args, **kw: _P.kwargs) -> _D:
        data = make(p, *args, **kw)
        p.phase = data
        return data

    return factory


def _make_starting(p: Core, waiter: Deferred[None]) -> Starting:
    return Starting.begin(p.argv, waiter, p.phase)


def _make_ready(p: Core) -> Ready:
    return Ready.after(p.phase, p.reactor.seconds())


def _make_stopping(p: Core, waiter: Deferred[int | None]) -> Stopping:
    return Stopping.after(p.phase, waiter)


def _make_aborting(p: Core, reason: str) -> Aborting:
    return Aborting.failing(p.phase, reason)


def _make_killing(p: Core, reason: str) -> Killing:
    return Killing.unresponsive(p.phase)


def _make_ended(kind: type[_E]) -> Callable[..., _E]:
    # An ended state is entered on different inputs (exited(status), stop(waiter)), and
    # automat types a factory by its input's arguments: this one takes any, and reads
    # what it needs from the state being left (the exit status is on its child by then).
    def make(p: Core, *_: object) -> _E:
        return kind.after(p.phase)

    return make


# automat keeps the core type for typing only; the transitions rely on the Protocol.
_b = TypeMachineBuilder(Inputs, Core)  # type: ignore[type-abstract]
_new = _b.state("new")  # never started: reads as "stopped" (automat's first state has no data)
_stopped = _b.state("stopped", _entering(_make_ended(Stopped)))
_starting = _b.state("starting", _entering(_make_starting))
_ready = _b.state("ready", _entering(_make_ready))
_stopping = _b.state("stopping", _entering(_make_stopping))
_aborting = _b.state("aborting", _entering(_make_aborting))  # a failed start's child, killed
_failed = _b.state("failed", _entering(_make_ended(Failed)))
_killing = _b.state("killing", _entering(_make_killing))  # a hung child, SIGKILLed

# A transition shared by several states is registered once per state (not by stacking
# decorators: each registration narrows the function to its own state's data type).

# -- start


@_new.upon(Inputs.start).to(_starting)
def _spawn_first(m: Inputs, p: Core, waiter: Deferred[None]) -> None:
    p.launch("stopped")


def _spawn(m: Inputs, p: Core, old: Ended, waiter: Deferred[None]) -> None:
    p.launch(old.name)


_stopped.upon(Inputs.start).to(_starting)(_spawn)
_failed.upon(Inputs.start).to(_starting)(_spawn)


def _join(m: Inputs, p: Core, now: Live, waiter: Deferred[None]) -> None:
    now.start_waiters.append(waiter)


_starting.upon(Inputs.start).loop()(_join)
_aborting.upon(Inputs.start).loop()(_join)  # joins the start that is failing


@_ready.upon(Inputs.start).loop()
def _already(m: Inputs, p: Core, now: Ready, waiter: Deferred[None]) -> None:
    waiter.callback(None)


def _after_stop(m: Inputs, p: Core, now: Stopping, waiter: Deferred[None]) -> None:
    now.restart_waiters.append(waiter)  # a new child once this one is gone


_stopping.upon(Inputs.start).loop()(_after_stop)
_killing.upon(Inputs.start).loop()(_after_stop)


# -- stop


def _not_running(m: Inputs, p: Core, waiter: Deferred[int | None]) -> None:
    waiter.callback(p.exit_status)


_new.upon(Inputs.stop).loop()(_not_running)
_stopped.upon(Inputs.stop, nodata=True).loop()(_not_running)


@_failed.upon(Inputs.stop).to(_stopped)
def _acknowledge(m: Inputs, p: Core, old: Failed, waiter: Deferred[int | None]) -> None:
    p.announce(old.name)
    waiter.callback(p.exit_status)


@_starting.upon(Inputs.stop).to(_stopping)
def _stop_starting(m: Inputs, p: Core, old: Starting, waiter: Deferred[int | None]) -> None:
    old.end_readiness()  # the pending start fails once the child is gone
    p.terminate(old)


@_ready.upon(Inputs.stop).to(_stopping)
def _stop_ready(m: Inputs, p: Core, old: Ready, waiter: Deferred[int | None]) -> None:
    old.end_liveness()
    p.terminate(old)


def _wait_stop(m: Inputs, p: Core, now: Stopping, waiter: Deferred[int | None]) -> None:
    # stop after start after stop: the last word is "stopped" (an aborting start has no
    # restarts queued: starts join it instead)
    fail_all(now.restart_waiters, f"model '{p.alias}' was stopped")
    now.restart_waiters.clear()
    now.stop_waiters.append(waiter)


_stopping.upon(Inputs.stop).loop()(_wait_stop)
_aborting.upon(Inputs.stop).loop()(_wait_stop)
_killing.upon(Inputs.stop).loop()(_wait_stop)  # SIGKILL is sent: wait for the exit

# -- readiness


@_starting.upon(Inputs.listening).loop()
def _port(m: Inputs, p: Core, now: Starting, port: int) -> None:
    p.listening_on(now, port)


def _ignore_port(m: Inputs, p: Core, now: Live, port: int) -> None:
    pass  # too late: only a starting child's port counts


_ready.upon(Inputs.listening).loop()(_ignore_port)
_stopping.upon(Inputs.listening).loop()(_ignore_port)
_aborting.upon(Inputs.listening).loop()(_ignore_port)
_killing.upon(Inputs.listening).loop()(_ignore_port)


@_starting.upon(Inputs.healthy).to(_ready)
def _healthy(m: Inputs, p: Core, old: Starting) -> None:
    old.end_readiness()
    p.become_ready(old)


@_starting.upon(Inputs.start_failed).to(_aborting)
def _abort(m: Inputs, p: Core, old: Starting, reason: str) -> None:
    old.end_readiness()
    p.terminate(old)


# -- liveness


@_ready.upon(Inputs.unresponsive).to(_killing)
def _hung(m: Inputs, p: Core, old: Ready, reason: str) -> None:
    old.end_liveness()
    p.kill_unresponsive(old, reason)


# -- exits


@_starting.upon(Inputs.exited).to(_failed)
def _died_loading(m: Inputs, p: Core, old: Starting, status: int | None) -> None:
    old.end_readiness()
    if old.child.pid is None:
        p.fail_start(old, "cannot run the llama-server executable")
    else:
        p.fail_start(old, f"{describe_exit(status)} during start")


@_aborting.upon(Inputs.exited).to(_failed)
def _aborted(m: Inputs, p: Core, old: Aborting, status: int | None) -> None:
    p.fail_start(old, old.reason)


@_ready.upon(Inputs.exited).to(_failed)
def _crash(m: Inputs, p: Core, old: Ready, status: int | None) -> None:
    old.end_liveness()
    p.crashed(old)


@_stopping.upon(Inputs.exited).to(_stopped)
def _gone(m: Inputs, p: Core, old: Stopping, status: int | None) -> None:
    p.finish_stop(old)


@_killing.upon(Inputs.exited).to(_failed)
def _reaped(m: Inputs, p: Core, old: Killing, status: int | None) -> None:
    p.finish_stop(old)  # already reported as failed; restarts asked for meanwhile run now


MACHINE = _b.build()
"""``MACHINE(process)``: the inputs of a new lifecycle, in its first state."""
