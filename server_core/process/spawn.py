"""Starting a llama-server child and reading what it says.

Twisted has no ``preexec_fn``, so the child is spawned as ``python -c WRAPPER PARENT_PID
EXECUTABLE ARGS...``: the wrapper calls ``setsid()`` (the child leads its own process
group, pid == pgid, so a stop can signal the whole group with ``killpg``), sets
``prctl(PR_SET_PDEATHSIG, SIGTERM)`` (Linux) and ``execvp``s the executable, keeping the
pid. PDEATHSIG makes the kernel send SIGTERM to the child when the *thread* that forked
it exits, which for Twisted is the reactor thread: so the child is told to stop also
when server_core is SIGKILLed. It does not reach a child that ignores SIGTERM, or
grandchildren; that is what the run-state files of ``server_core.process.orphans`` are for.

``LineReader`` is the one protocol for a child's output: both pipes cut into lines, the
exit (leader reaped) and the end (every pipe closed) reported as exit statuses.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from twisted.internet import error as ierror
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = [
    "ChildSpawner",
    "LineReader",
    "PosixSpawner",
    "describe_exit",
    "exit_status",
]

log = Logger()

MAX_LINE = 16 * 1024  # longer output without a newline is cut into lines of this size

# Runs in the child between fork and exec. argv: PARENT_PID EXECUTABLE ARGS...
# Kept free of site-packages imports (-I -S).
_WRAPPER = r"""
import os, sys
os.setsid()
try:
    import ctypes, signal
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)  # the parent died before PDEATHSIG was armed
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as e:
    name = os.path.basename(sys.argv[2])
    sys.stderr.write("server_core: cannot run %s: %s\n" % (name, e.strerror))
    sys.exit(127)
"""


class ChildSpawner(Protocol):
    """How a child is started and signalled (tests substitute a fake)."""

    def spawn(self, protocol: ProcessProtocol, argv: Sequence[str], env: Mapping[str, str]) -> int:
        """Start ``argv`` in its own process group; return its pid."""

    def signal_group(self, pid: int, sig: int, *, leader_alive: bool) -> None:
        """Send ``sig`` to the group led by ``pid`` (and to ``pid`` if it has no group
        yet and ``leader_alive``: it is still our unreaped child)."""


class PosixSpawner:
    """``reactor.spawnProcess`` through the setsid/PDEATHSIG wrapper."""

    def __init__(self, reactor: IReactorProcess, python: str = sys.executable) -> None:
        self.reactor = reactor
        self.python = python

    def spawn(self, protocol: ProcessProtocol, argv: Sequence[str], env: Mapping[str, str]) -> int:
        """Spawn ``argv`` under the wrapper, stdin closed, stdout and stderr read."""
        wrapped = [self.python, "-I", "-S", "-c", _WRAPPER, str(os.getpid()), *argv]
        transport = self.reactor.spawnProcess(
            protocol, self.python, wrapped, env=dict(env), childFDs={0: "w", 1: "r", 2: "r"}
        )
        transport.closeStdin()  # llama-server reads nothing; EOF instead of a dangling pipe
        return int(transport.pid)

    def signal_group(self, pid: int, sig: int, *, leader_alive: bool) -> None:
        """``killpg``; by pid only while the wrapper has not made the group yet."""
        try:
            os.killpg(pid, sig)
            return
        except ProcessLookupError:
            pass
        except PermissionError:
            log.warn("not allowed to signal process group {pid}", pid=pid)
            return
        # No such group: the wrapper has not called setsid() yet (or the group is gone).
        # Only an unreaped child of ours may be signalled by pid: its pid cannot be reused.
        if leader_alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def exit_status(reason: Failure) -> int | None:
    """Exit code, or ``-N`` for a death by signal N (like ``subprocess``)."""
    value = reason.value
    if isinstance(value, ierror.ProcessTerminated):
        if value.signal is not None:
            return -int(value.signal)
        return None if value.exitCode is None else int(value.exitCode)
    if isinstance(value, ierror.ProcessDone):
        return 0
    return None


def describe_exit(status: int | None) -> str:
    """``exited with status 1``, ``was killed by SIGKILL``: for logs and error messages."""
    if status is None:
        return "exited"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"was killed by {name}"
    return f"exited with status {status}"


class LineReader(ProcessProtocol):
    """A child's stdout and stderr as lines, and its exit, for the owner's callbacks.

    ``on_exit`` is called when the leader is reaped, ``on_end`` when every pipe has
    closed too (a grandchild may hold them much longer); both get the exit status.
    """

    def __init__(
        self,
        on_line: Callable[[str], None],
        on_exit: Callable[[int | None], None],
        on_end: Callable[[int | None], None],
    ) -> None:
        self._on_line = on_line
        self._on_exit = on_exit
        self._on_end = on_end
        self._partial: dict[int, bytes] = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """Split on newlines; a line longer than ``MAX_LINE`` is cut."""
        buf = self._partial.get(childFD, b"") + data
        *lines, rest = buf.split(b"\n")
        while len(rest) > MAX_LINE:
            lines.append(rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        self._partial[childFD] = rest
        for raw in lines:
            self._emit(raw)

    def processExited(self, reason: Failure) -> None:
        """The leader is gone (reaped)."""
        self._on_exit(exit_status(reason))

    def processEnded(self, reason: Failure) -> None:
        """Every pipe closed: the last partial lines are lines too."""
        for fd, rest in self._partial.items():
            if rest:
                self._emit(rest)
            self._partial[fd] = b""
        self._on_end(exit_status(reason))

    def _emit(self, raw: bytes) -> None:
        self._on_line(raw.decode("utf-8", "replace").rstrip("\r"))
