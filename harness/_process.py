"""Child processes as the harness sees them: output lines, exit status, resident memory.

Every harness piece that runs a child (``harness.fake_llama.FakeLlamaProcess``,
``harness.chaos.server_child.ServerChild``, the integration tests' ``procs.Child``) needs
the same plumbing, so it lives here once:

* ``LineProcessProtocol``: a ``ProcessProtocol`` that splits stdout and stderr into lines
  (a partial line waits for its newline, or for the exit), keeps them, lets a caller wait
  for a line matching a regex (seen or still to come) or for the exit, and stops the child
  like an operator would (``terminate``: SIGTERM, then SIGKILL after a grace period).
* ``exit_status``: how the child ended, as one int: its exit code, or ``-signal``.
* ``rss_kib``: a process's resident set size, read from ``/proc`` (Linux).

``server_core.process`` has its own equivalents for ``llama-server``; the harness may
import only the codec ``server_core.sse`` from server_core, so the two stay apart.
"""

from __future__ import annotations

import re
import signal as _signal
from typing import Any

from twisted.internet import defer
from twisted.internet import error as ierror
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

__all__ = ["LineProcessProtocol", "exit_status", "rss_kib"]

# How many of the last lines an exit error quotes: enough to show why, short enough to read.
_TAIL = 30


def exit_status(reason: Failure) -> int:
    """How a child ended, from ``processEnded``'s reason: the exit code, or ``-signal``
    when a signal killed it (the convention of ``subprocess``'s ``returncode``)."""
    value = reason.value
    if isinstance(value, ierror.ProcessTerminated) and value.signal is not None:
        return -int(value.signal)
    return int(getattr(value, "exitCode", 0) or 0)


def rss_kib(pid: int, default: int | None = None) -> int:
    """The resident set size of ``pid`` in KiB (``VmRSS`` in ``/proc/PID/status``).

    A process without one (a zombie, a kernel thread) gives ``default``, or raises
    ``RuntimeError`` when there is none; a process that is gone raises ``OSError``."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    if default is not None:
        return default
    raise RuntimeError(f"no VmRSS for pid {pid}")


class LineProcessProtocol(ProcessProtocol):
    """A child's stdout and stderr as lines, with waits for a line and for the exit.

    ``lines`` holds every line in arrival order (only the last ``keep`` when given).
    Subclasses hook ``line_received`` (each line, before waiters see it), ``child_exited``
    (once, before waiters hear of the exit), ``exit_error`` and ``kill``.
    """

    def __init__(self, name: str, reactor: Any = None, *, keep: int | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.name = name
        self.reactor = reactor
        self.lines: list[str] = []
        self.exit_status: int | None = None
        self._keep = keep
        self._partial: dict[int, bytes] = {}
        self._line_waiters: list[tuple[re.Pattern[str], Deferred[re.Match[str]]]] = []
        self._exit_waiters: list[Deferred[int]] = []

    # -- state -----------------------------------------------------------------------

    @property
    def exited(self) -> bool:
        """True once the child has ended (and ``exit_status`` is set)."""
        return self.exit_status is not None

    @property
    def pid(self) -> int | None:
        """The child's pid, or None before it is spawned."""
        return None if self.transport is None else self.transport.pid

    # -- hooks -----------------------------------------------------------------------

    def line_received(self, fd: int, line: str) -> None:
        """Called with each line (``fd`` 1 or 2) once it is in ``lines``; does nothing."""

    def child_exited(self, status: int) -> None:
        """Called once when the child ends, before any waiter hears of it; does nothing."""

    def exit_error(self) -> Exception:
        """What a wait for a line fails with when the child ends first."""
        return RuntimeError(f"{self.name} exited:\n" + "\n".join(self.lines[-_TAIL:]))

    def kill(self) -> None:
        """Kill the child when ``terminate``'s grace is over: SIGKILL."""
        self.signal("KILL")

    # -- ProcessProtocol -------------------------------------------------------------

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """Split ``data`` into lines; a partial last line waits for the rest."""
        *complete, self._partial[childFD] = (self._partial.get(childFD, b"") + data).split(b"\n")
        for raw in complete:
            self._line(childFD, raw)

    def processEnded(self, reason: Failure) -> None:
        """Deliver any unterminated last lines, then the exit to every waiter."""
        partial, self._partial = self._partial, {}
        for fd, rest in sorted(partial.items()):
            if rest:
                self._line(fd, rest)
        status = self.exit_status = exit_status(reason)
        self.child_exited(status)
        line_waiters, self._line_waiters = self._line_waiters, []
        for _, d in line_waiters:
            d.errback(Failure(self.exit_error()))
        exit_waiters, self._exit_waiters = self._exit_waiters, []
        for exited in exit_waiters:
            exited.callback(status)

    def _line(self, fd: int, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        self.lines.append(line)
        if self._keep is not None and len(self.lines) > self._keep:
            del self.lines[0]
        self.line_received(fd, line)
        for pattern, d in list(self._line_waiters):
            match = pattern.search(line)
            if match:
                self._line_waiters.remove((pattern, d))
                d.callback(match)

    # -- waiting ---------------------------------------------------------------------

    def when_line(
        self, regex: str | re.Pattern[str], timeout: float | None = None
    ) -> Deferred[re.Match[str]]:
        """Fires with the match of the first line (seen or to come) matching ``regex``;
        fails with ``exit_error()`` if the child ends first, or after ``timeout`` seconds."""
        pattern = re.compile(regex)
        for line in self.lines:
            match = pattern.search(line)
            if match:
                return succeed(match)
        if self.exited:
            return fail(self.exit_error())
        d: Deferred[re.Match[str]] = Deferred(self._forget_line_waiter)
        self._line_waiters.append((pattern, d))
        return d if timeout is None else d.addTimeout(timeout, self.reactor)

    def when_exited(self, timeout: float | None = None) -> Deferred[int]:
        """Fires with the exit status (code, or ``-signal``); fails after ``timeout``."""
        if self.exit_status is not None:
            return succeed(self.exit_status)
        d: Deferred[int] = Deferred(self._exit_waiters.remove)
        self._exit_waiters.append(d)
        return d if timeout is None else d.addTimeout(timeout, self.reactor)

    def _forget_line_waiter(self, d: Deferred[Any]) -> None:
        self._line_waiters = [(p, w) for p, w in self._line_waiters if w is not d]

    # -- control ---------------------------------------------------------------------

    def signal(self, sig: int | str) -> None:
        """Send a signal (``signal.SIGTERM``, ``"TERM"``, ``"SIGKILL"``...) unless the
        child is gone or not spawned; a child that just exited is no error."""
        if self.exited or self.transport is None:
            return
        name = sig if isinstance(sig, str) else _signal.Signals(sig).name
        try:
            self.transport.signalProcess(name.removeprefix("SIG"))
        except ierror.ProcessExitedAlready:
            pass

    async def terminate(self, grace: float, kill_grace: float | None = None) -> tuple[int, bool]:
        """SIGTERM, then ``kill()`` after ``grace`` seconds; waits ``kill_grace`` more at
        most (None: as long as it takes). Returns (exit status, ended by itself)."""
        if self.exit_status is not None:
            return self.exit_status, True
        exited = self.when_exited(timeout=grace)
        self.signal("TERM")
        try:
            return await exited, True
        except defer.TimeoutError:
            self.kill()
            return await self.when_exited(timeout=kill_grace), False
