"""One managed llama-server child process: spawn, readiness, logs, stop, orphans.

Lifecycle (an automat ``TypeMachineBuilder`` machine, so an input a state does not
accept raises instead of corrupting anything)::

    stopped --start--> starting --/health 200--> ready --stop--> stopping --exit--> stopped
    starting --exit--> failed            (crash during load: fails the start at once)
    starting --timeout--> stopping* --exit--> failed   (*killed; reported as "stopping")
    starting --stop--> stopping --exit--> stopped     (the pending start fails)
    ready --exit--> failed               (crash: ``on_state`` sees ready -> failed)
    failed --start--> starting,  failed --stop--> stopped

A start that fails fires its error only once the child has been reaped, so a caller
that retries never runs two children for one alias. ``start()`` while stopping
starts again once the old child is gone.

Spawning. Twisted has no ``preexec_fn``, so the child is spawned as ``python -c
WRAPPER PARENT_PID EXECUTABLE ARGS...``: the wrapper calls ``setsid()`` (the child
leads its own process group, pid == pgid, and ``stop`` signals the whole group with
``killpg``), sets ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` (Linux) and ``execvp``s the
executable, keeping the pid. PDEATHSIG makes the kernel send SIGTERM to the child
when the *thread* that forked it exits, which for Twisted is the reactor thread:
so the child is told to stop also when server_core is SIGKILLed. It does not reach
a child that ignores SIGTERM, or grandchildren; that is what the run-state files
and ``reap_orphans`` are for.

Readiness. The command line holds ``--port 0``; llama-server binds a free port and
logs ``listening on http://HOST:PORT`` once the model has loaded (real builds on
stderr; both streams are read). Then ``GET /health`` is polled every
``poll_interval`` seconds (503 = loading, refused = not listening, 200 = ready),
raced against the process exit and ``start_timeout``.

Run-state files. Each child gets ``<state_dir>/<alias>-<pid>.json`` with its pid,
process group, argv, our pid and the start times of both processes (from
``/proc/PID/stat``, which tell a live process from a reused pid). The file goes away
when the child is reaped. If server_core dies without reaping (SIGKILL, OOM, power
cut of a container's PID 1), the next server_core calls ``reap_orphans()`` at start:
every recorded group whose owner is gone and whose leader still runs the recorded
command line is sent SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from automat import TypeMachineBuilder
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, PartialDownloadError, readBody
from zope.interface import implementer

from server_core.aliases import LocalAlias
from server_core.config import MANAGED_FLAGS
from server_core.errors import ContextError
from server_core.flags import has_flag, merge_flags
from server_core.interfaces import IServerProcess

__all__ = [
    "STATES",
    "ChildSpawner",
    "HealthCheck",
    "HttpHealthCheck",
    "LlamaServerProcess",
    "PosixSpawner",
    "default_state_dir",
    "reap_orphans",
]

log = Logger()

STATES = ("stopped", "starting", "ready", "stopping", "failed")

_LISTENING = re.compile(r"listening on https?://(\[[^\]]*\]|[^\s:/]+):(\d+)")
_MAX_LINE = 16 * 1024  # longer output without a newline is cut into lines of this size
_TAIL_FOR_ERRORS = 30  # lines of the current run kept for the failure log entry


# -- spawning -------------------------------------------------------------------------

# Runs in the child between fork and exec (Twisted has no preexec_fn). argv:
# PARENT_PID EXECUTABLE ARGS... Kept free of site-packages imports (-I -S).
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

    def __init__(self, reactor: Any, python: str = sys.executable) -> None:
        self.reactor = reactor
        self.python = python

    def spawn(self, protocol: ProcessProtocol, argv: Sequence[str], env: Mapping[str, str]) -> int:
        wrapped = [self.python, "-I", "-S", "-c", _WRAPPER, str(os.getpid()), *argv]
        transport = self.reactor.spawnProcess(
            protocol, self.python, wrapped, env=dict(env), childFDs={0: "w", 1: "r", 2: "r"}
        )
        transport.closeStdin()  # llama-server reads nothing; EOF instead of a dangling pipe
        return int(transport.pid)

    def signal_group(self, pid: int, sig: int, *, leader_alive: bool) -> None:
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


HealthCheck = Callable[[str, float], "Deferred[int | None]"]
"""``(base_url, timeout) -> Deferred`` of the ``/health`` status, None if unreachable.
Must not fail."""


class HttpHealthCheck:
    """``GET /health`` with its own non-persistent pool (no idle sockets left behind)."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._agent = Agent(
            reactor, connectTimeout=5, pool=HTTPConnectionPool(reactor, persistent=False)
        )

    def __call__(self, base_url: str, timeout: float) -> Deferred[int | None]:
        async def check() -> int | None:
            url = (base_url + "/health").encode("ascii")
            response = await self._agent.request(b"GET", url)
            try:
                await readBody(response)
            except PartialDownloadError:
                pass  # a body ended by closing the connection (no Content-Length) still counts
            return int(response.code)

        def unreachable(failure: Failure) -> None:
            # refused, reset, timed out, cancelled: all mean "not ready yet"
            log.debug("health poll {url}: {why}", url=base_url, why=failure.getErrorMessage())
            return None

        d = Deferred.fromCoroutine(check())
        d.addTimeout(timeout, self.reactor)
        return d.addErrback(unreachable)


# -- helpers ---------------------------------------------------------------------------


def default_state_dir() -> str:
    """``$XDG_RUNTIME_DIR/server-core``, else ``~/.cache/server-core/run``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "server-core")
    return os.path.join(os.path.expanduser("~"), ".cache", "server-core", "run")


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, pgrp, starttime) of a live process from /proc, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read().decode("utf-8", "replace")
        fields = data[data.rindex(")") + 2 :].split()
        return fields[0], int(fields[2]), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _proc_cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    return [part.decode("utf-8", "surrogateescape") for part in raw.split(b"\0")[:-1]]


def _exit_status(reason: Failure) -> int | None:
    """Exit code, or ``-N`` for a death by signal N (like ``subprocess``)."""
    value = reason.value
    if isinstance(value, ierror.ProcessTerminated):
        if value.signal is not None:
            return -int(value.signal)
        return None if value.exitCode is None else int(value.exitCode)
    if isinstance(value, ierror.ProcessDone):
        return 0
    return None


def _describe_exit(status: int | None) -> str:
    if status is None:
        return "exited"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"was killed by {name}"
    return f"exited with status {status}"


_ERRORISH = re.compile(r"error|fail|cannot|invalid|unknown|abort|exception|out of memory", re.I)


def _client_safe_lines(lines: Iterable[str], limit: int = 3) -> list[str]:
    """The last ``limit`` error-like output lines that name no path (clients see these)."""
    picked = [
        " ".join(line.split())[:200]
        for line in lines
        if _ERRORISH.search(line) and "/" not in line and "\\" not in line
    ]
    return picked[-limit:]


def _safe_name(alias: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", alias)[:64] or "alias"


# -- the process ----------------------------------------------------------------------


class _Inputs(Protocol):
    """Inputs of the lifecycle machine (all return None so they may nest)."""

    def start(self, waiter: Deferred[None]) -> None: ...

    def stop(self, waiter: Deferred[int | None]) -> None: ...

    def spawn_failed(self, reason: str) -> None: ...

    def listening(self, port: int) -> None: ...

    def healthy(self) -> None: ...

    def start_failed(self, reason: str) -> None: ...

    def exited(self, status: int | None) -> None: ...


class _ChildProtocol(ProcessProtocol):
    """Splits output into lines and reports exit to its owner (one per spawn)."""

    def __init__(self, owner: LlamaServerProcess, run: int) -> None:
        self.owner = owner
        self.run = run
        self._partial: dict[int, bytes] = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buf = self._partial.get(childFD, b"") + data
        *lines, rest = buf.split(b"\n")
        while len(rest) > _MAX_LINE:
            lines.append(rest[:_MAX_LINE])
            rest = rest[_MAX_LINE:]
        self._partial[childFD] = rest
        for raw in lines:
            self.owner._on_line(self.run, raw.decode("utf-8", "replace").rstrip("\r"))

    def processExited(self, reason: Failure) -> None:
        self.owner._on_process_exited(self.run, _exit_status(reason))

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._partial.items():
            if rest:
                self.owner._on_line(self.run, rest.decode("utf-8", "replace").rstrip("\r"))
            self._partial[fd] = b""
        self.owner._on_process_ended(self.run, _exit_status(reason))


@implementer(IServerProcess)
class LlamaServerProcess:
    """One llama-server child for one ``LocalAlias``.

    ``args`` are the executable's flags (``llama_server.args`` or a variant's);
    ``alias.context_params`` are merged over them (``server_core.flags``). The
    command line is ``executable --model PATH --alias NAME --host HOST --port 0
    FLAGS...``; flags server_core sets itself (``MANAGED_FLAGS``) raise ValueError.

    ``on_state(proc, old, new)`` is called on every state change, inside the change
    (the new state is already visible); it may call ``start``/``stop``, which then run
    right after. ``spawner`` / ``health_check`` replace process spawning and the
    ``/health`` poll (for tests). ``env`` is added to server_core's environment.
    """

    def __init__(
        self,
        alias: LocalAlias,
        executable: str,
        args: Sequence[str],
        *,
        reactor: Any,
        start_timeout: float = 120.0,
        stop_grace: float = 10.0,
        poll_interval: float = 0.05,
        log_lines: int = 500,
        host: str = "127.0.0.1",
        on_state: Callable[[LlamaServerProcess, str, str], None] | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        spawner: ChildSpawner | None = None,
        health_check: HealthCheck | None = None,
    ) -> None:
        flags = merge_flags(args, alias.context_params)
        if has_flag(flags, MANAGED_FLAGS):
            raise ValueError(
                f"alias {alias.name!r}: server_core sets --model, --alias, --host and --port itself"
            )
        self.local_alias = alias
        self.alias: str = alias.name
        self.executable = executable
        self._flags = flags
        self.reactor = reactor
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.poll_interval = poll_interval
        self.host = host
        self.on_state = on_state
        self.state_dir = str(state_dir) if state_dir is not None else default_state_dir()
        self._env = dict(env or {})
        self._spawner: ChildSpawner = spawner or PosixSpawner(reactor)
        self._health: HealthCheck = health_check or HttpHealthCheck(reactor)

        self.state: str = "stopped"
        self.port: int | None = None
        self.pid: int | None = None
        self.started_at: float | None = None
        self.last_error: str | None = None
        self.exit_status: int | None = None

        self._logs: deque[str] = deque(maxlen=max(1, log_lines))
        self._run_tail: deque[str] = deque(maxlen=_TAIL_FOR_ERRORS)
        self._log_listeners: list[Callable[[str], None]] = []
        self._run = 0
        self._exit_fed_run = -1  # the run whose exit the state machine has seen
        self._reaped = True
        self._state_file: str | None = None
        self._abort_reason = ""
        self._start_waiters: list[Deferred[None]] = []
        self._restart_waiters: list[Deferred[None]] = []
        self._stop_waiters: list[Deferred[int | None]] = []
        self._exit_waiters: list[Deferred[int | None]] = []
        self._deadline = 0.0
        self._start_timer: IDelayedCall | None = None
        self._kill_timer: IDelayedCall | None = None
        self._poll_call: IDelayedCall | None = None
        self._poll_d: Deferred[int | None] | None = None
        self._machine: _Inputs = _MACHINE(self)

    # -- public API --------------------------------------------------------------------

    @property
    def argv(self) -> list[str]:
        """The command line (without the spawn wrapper)."""
        return [
            self.executable,
            "--model",
            self.local_alias.model_path,
            "--alias",
            self.alias,
            "--host",
            self.host,
            "--port",
            "0",
            *self._flags,
        ]

    @property
    def base_url(self) -> str | None:
        """``http://HOST:PORT`` once the port is known, else None."""
        if self.port is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> Deferred[None]:
        """Spawn (unless starting or ready) and fire when ready.

        Every call gets its own Deferred; calls during one start share that start.
        Fails with ``ContextError`` (503) naming the model and what went wrong, once
        the failed child has been reaped.
        """
        d: Deferred[None] = Deferred()
        self._machine.start(d)
        return d

    def stop(self) -> Deferred[int | None]:
        """SIGTERM to the process group, SIGKILL after ``stop_grace``.

        Fires with the exit status (code, or ``-signal``); idempotent: when nothing
        runs it fires at once with the last exit status.
        """
        d: Deferred[int | None] = Deferred()
        self._machine.stop(d)
        return d

    def when_exited(self) -> Deferred[int | None]:
        """A fresh Deferred firing with the exit status of the running child (crash
        included); at once with the last status when no child runs."""
        if self._reaped and self.pid is None:
            return succeed(self.exit_status)
        d: Deferred[int | None] = Deferred()
        self._exit_waiters.append(d)
        return d

    def recent_logs(self) -> list[str]:
        """The last ``log_lines`` output lines (stdout and stderr, all runs)."""
        return list(self._logs)

    def add_log_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(line)`` for every future output line."""
        self._log_listeners.append(listener)

    def remove_log_listener(self, listener: Callable[[str], None]) -> None:
        with contextlib.suppress(ValueError):
            self._log_listeners.remove(listener)

    def __repr__(self) -> str:
        return f"<LlamaServerProcess {self.alias!r} {self.state} pid={self.pid} port={self.port}>"

    # -- state changes (called by the machine's transitions) ---------------------------

    def _set_state(self, new: str) -> None:
        old, self.state = self.state, new
        if old == new:
            return
        log.debug("[{alias}] {old} -> {new}", alias=self.alias, old=old, new=new)
        if self.on_state is not None:
            try:
                self.on_state(self, old, new)
            except Exception:
                log.failure("[{alias}] on_state callback failed", alias=self.alias)

    def _begin_start(self, waiter: Deferred[None]) -> None:
        self._run += 1
        self.port = None
        self.started_at = None
        self.exit_status = None
        self._abort_reason = ""
        self._run_tail.clear()
        self._start_waiters.append(waiter)
        self._deadline = self.reactor.seconds() + self.start_timeout
        env = {**os.environ, **self._env}
        argv = self.argv
        log.info("[{alias}] starting: {argv}", alias=self.alias, argv=" ".join(argv))
        try:
            pid = self._spawner.spawn(_ChildProtocol(self, self._run), argv, env)
        except Exception:
            log.failure("[{alias}] cannot spawn {exe}", alias=self.alias, exe=self.executable)
            self._set_state("starting")
            self._machine.spawn_failed("cannot run the llama-server executable")
            return
        self.pid = pid
        self._reaped = False
        self._write_state_file(pid, argv)
        self._start_timer = self.reactor.callLater(self.start_timeout, self._start_timed_out)
        self._set_state("starting")

    def _start_timed_out(self) -> None:
        self._start_timer = None
        if self.state == "starting":
            self._machine.start_failed(f"not ready after {self.start_timeout:g} s")

    def _on_port(self, port: int) -> None:
        if self.port is None:
            self.port = port
            log.info("[{alias}] listening on port {port}", alias=self.alias, port=port)
            self._poll()

    def _poll(self) -> None:
        self._poll_call = None
        if self.state != "starting" or self.base_url is None:
            return
        run = self._run
        timeout = max(0.05, min(2.0, self._deadline - self.reactor.seconds()))
        d = self._health(self.base_url, timeout)
        self._poll_d = d

        def answered(status: int | None) -> None:
            if self._poll_d is not d:
                return  # cancelled: the start is over
            self._poll_d = None
            if self.state != "starting" or run != self._run:
                return
            if status == 200:
                self._machine.healthy()
            else:
                self._poll_call = self.reactor.callLater(self.poll_interval, self._poll)

        def broken(failure: Failure) -> None:
            if not failure.check(CancelledError):
                log.failure("[{alias}] health poll failed", failure, alias=self.alias)

        d.addCallback(answered)
        d.addErrback(broken)

    def _stop_start_timers(self) -> None:
        if self._start_timer is not None and self._start_timer.active():
            self._start_timer.cancel()
        self._start_timer = None
        if self._poll_call is not None and self._poll_call.active():
            self._poll_call.cancel()
        self._poll_call = None
        d, self._poll_d = self._poll_d, None
        if d is not None:
            d.cancel()

    def _become_ready(self) -> None:
        self._stop_start_timers()
        self.started_at = self.reactor.seconds()
        self.last_error = None
        log.info(
            "[{alias}] ready at {url} (pid {pid})",
            alias=self.alias,
            url=self.base_url,
            pid=self.pid,
        )
        self._set_state("ready")
        waiters, self._start_waiters = self._start_waiters, []
        for w in waiters:
            w.callback(None)

    def _terminate(self, next_state: str) -> None:
        """Enter stopping (or aborting) and signal the group; SIGKILL after the grace."""
        self._stop_start_timers()
        self._set_state(next_state)
        if self.pid is None:
            self._machine.exited(self.exit_status)
            return
        log.info("[{alias}] stopping pid {pid} (SIGTERM)", alias=self.alias, pid=self.pid)
        self._signal(signal.SIGTERM)
        if self._kill_timer is None:
            self._kill_timer = self.reactor.callLater(self.stop_grace, self._kill)

    def _kill(self) -> None:
        self._kill_timer = None
        if self.pid is not None:
            log.warn(
                "[{alias}] pid {pid} still running after {grace:g} s: SIGKILL",
                alias=self.alias,
                pid=self.pid,
                grace=self.stop_grace,
            )
            self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.pid is not None:
            self._spawner.signal_group(self.pid, sig, leader_alive=not self._reaped)

    def _finish_exit(self, status: int | None, state: str) -> None:
        if self._kill_timer is not None and self._kill_timer.active():
            self._kill_timer.cancel()
        self._kill_timer = None
        self._stop_start_timers()
        self.exit_status = status
        self.pid = None
        self.port = None
        self._set_state(state)

    def _fire_exit_waiters(self, status: int | None) -> None:
        stops, self._stop_waiters = self._stop_waiters, []
        exits, self._exit_waiters = self._exit_waiters, []
        for d in [*stops, *exits]:
            d.callback(status)

    def _fail_start(self, reason: str, status: int | None) -> None:
        message = f"model '{self.alias}' failed to start: {reason}"
        lines = _client_safe_lines(self._run_tail)
        if lines:
            message += "; last output: " + " | ".join(lines)
        self.last_error = message
        log.error(
            "[{alias}] failed to start: {reason}\ncommand: {argv}\nlast output:\n{tail}",
            alias=self.alias,
            reason=reason,
            argv=" ".join(self.argv),
            tail="\n".join(self._run_tail),
        )
        self._finish_exit(status, "failed")
        self._fail_waiters(self._start_waiters, message)
        self._start_waiters = []
        self._fire_exit_waiters(status)

    def _crashed(self, status: int | None) -> None:
        what = _describe_exit(status)
        self.last_error = f"model '{self.alias}' {what} unexpectedly"
        log.error(
            "[{alias}] {what} while serving; last output:\n{tail}",
            alias=self.alias,
            what=what,
            tail="\n".join(self._run_tail),
        )
        self._finish_exit(status, "failed")
        self._fire_exit_waiters(status)

    def _stopped(self, status: int | None) -> None:
        log.info("[{alias}] stopped ({what})", alias=self.alias, what=_describe_exit(status))
        self._finish_exit(status, "stopped")
        self._fail_waiters(self._start_waiters, f"model '{self.alias}' was stopped while starting")
        self._start_waiters = []
        self._fire_exit_waiters(status)
        restarts, self._restart_waiters = self._restart_waiters, []
        for w in restarts:
            self._machine.start(w)  # runs right after this transition

    def _fail_waiters(self, waiters: list[Deferred[None]], message: str) -> None:
        for w in list(waiters):
            w.errback(ContextError(message))

    # -- child events -------------------------------------------------------------------

    def _on_line(self, run: int, line: str) -> None:
        self._logs.append(line)
        if run == self._run:
            self._run_tail.append(line)
        log.info("[{alias}] {line}", alias=self.alias, line=line)
        for listener in list(self._log_listeners):
            try:
                listener(line)
            except Exception:
                log.failure("[{alias}] log listener failed", alias=self.alias)
        if run == self._run and self.state == "starting" and self.port is None:
            m = _LISTENING.search(line)
            if m:
                self._machine.listening(int(m.group(2)))

    def _on_process_exited(self, run: int, status: int | None) -> None:
        if run != self._run:
            return
        self._reaped = True
        # The leader is gone; anything left in its group is a straggler holding our
        # pipes (processEnded waits for them). The group id cannot be reused while
        # members exist, so this reaches only the child's own leftovers.
        if self.pid is not None:
            self._signal(signal.SIGKILL)
        # The server is dead now, not when the last pipe closes: a grandchild that left
        # the group could hold the pipes open for ever while traffic still came here.
        self._feed_exit(run, status)

    def _on_process_ended(self, run: int, status: int | None) -> None:
        if run != self._run:
            return
        self._reaped = True
        self._feed_exit(run, status)

    def _feed_exit(self, run: int, status: int | None) -> None:
        if self._exit_fed_run == run:
            return
        self._exit_fed_run = run
        self._remove_state_file()
        self._machine.exited(status)

    # -- run-state file -----------------------------------------------------------------

    def _write_state_file(self, pid: int, argv: list[str]) -> None:
        own = _proc_stat(os.getpid())
        child = _proc_stat(pid)
        record = {
            "version": 1,
            "alias": self.alias,
            "pid": pid,
            "pgid": pid,
            "owner_pid": os.getpid(),
            "owner_start": own[2] if own else None,
            "child_start": child[2] if child else None,
            "argv": argv,
            "created": time.time(),
        }
        path = os.path.join(self.state_dir, f"{_safe_name(self.alias)}-{pid}.json")
        try:
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(record, fh)
            os.replace(tmp, path)
            self._state_file = path
        except OSError as e:
            log.warn(
                "[{alias}] cannot write run-state file {path}: {err}",
                alias=self.alias,
                path=path,
                err=e,
            )

    def _remove_state_file(self) -> None:
        path, self._state_file = self._state_file, None
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)


# -- the machine ------------------------------------------------------------------------


def _build_machine() -> Callable[[LlamaServerProcess], _Inputs]:
    b = TypeMachineBuilder(_Inputs, LlamaServerProcess)
    stopped = b.state("stopped")
    starting = b.state("starting")
    ready = b.state("ready")
    stopping = b.state("stopping")
    aborting = b.state("aborting")  # a failed start's child being killed ("stopping")
    failed = b.state("failed")

    # start
    @stopped.upon(_Inputs.start).to(starting)
    @failed.upon(_Inputs.start).to(starting)
    def _spawn(m: _Inputs, p: LlamaServerProcess, waiter: Deferred[None]) -> None:
        p._begin_start(waiter)

    @starting.upon(_Inputs.start).loop()
    @aborting.upon(_Inputs.start).loop()  # joins the start that is failing
    def _join(m: _Inputs, p: LlamaServerProcess, waiter: Deferred[None]) -> None:
        p._start_waiters.append(waiter)

    @ready.upon(_Inputs.start).loop()
    def _already(m: _Inputs, p: LlamaServerProcess, waiter: Deferred[None]) -> None:
        waiter.callback(None)

    @stopping.upon(_Inputs.start).loop()
    def _after_stop(m: _Inputs, p: LlamaServerProcess, waiter: Deferred[None]) -> None:
        p._restart_waiters.append(waiter)

    # stop
    @stopped.upon(_Inputs.stop).loop()
    def _not_running(m: _Inputs, p: LlamaServerProcess, waiter: Deferred[int | None]) -> None:
        waiter.callback(p.exit_status)

    @failed.upon(_Inputs.stop).to(stopped)
    def _acknowledge(m: _Inputs, p: LlamaServerProcess, waiter: Deferred[int | None]) -> None:
        p._set_state("stopped")
        waiter.callback(p.exit_status)

    @starting.upon(_Inputs.stop).to(stopping)
    @ready.upon(_Inputs.stop).to(stopping)
    def _terminate(m: _Inputs, p: LlamaServerProcess, waiter: Deferred[int | None]) -> None:
        p._stop_waiters.append(waiter)
        p._terminate("stopping")

    @stopping.upon(_Inputs.stop).loop()
    def _cancel_restart(m: _Inputs, p: LlamaServerProcess, waiter: Deferred[int | None]) -> None:
        # stop after start after stop: the last word is "stopped"
        p._fail_waiters(p._restart_waiters, f"model '{p.alias}' was stopped")
        p._restart_waiters = []
        p._stop_waiters.append(waiter)

    @aborting.upon(_Inputs.stop).loop()
    def _wait_abort(m: _Inputs, p: LlamaServerProcess, waiter: Deferred[int | None]) -> None:
        p._stop_waiters.append(waiter)

    # readiness
    @starting.upon(_Inputs.listening).loop()
    def _port(m: _Inputs, p: LlamaServerProcess, port: int) -> None:
        p._on_port(port)

    @ready.upon(_Inputs.listening).loop()
    @stopping.upon(_Inputs.listening).loop()
    @aborting.upon(_Inputs.listening).loop()
    def _ignore_port(m: _Inputs, p: LlamaServerProcess, port: int) -> None:
        pass

    @starting.upon(_Inputs.healthy).to(ready)
    def _ready(m: _Inputs, p: LlamaServerProcess) -> None:
        p._become_ready()

    # start failures
    @starting.upon(_Inputs.spawn_failed).to(failed)
    def _no_child(m: _Inputs, p: LlamaServerProcess, reason: str) -> None:
        p._fail_start(reason, None)

    @starting.upon(_Inputs.start_failed).to(aborting)
    def _abort(m: _Inputs, p: LlamaServerProcess, reason: str) -> None:
        p._abort_reason = reason
        p._terminate("stopping")

    # exits
    @starting.upon(_Inputs.exited).to(failed)
    def _died_loading(m: _Inputs, p: LlamaServerProcess, status: int | None) -> None:
        p._fail_start(f"{_describe_exit(status)} during start", status)

    @aborting.upon(_Inputs.exited).to(failed)
    def _aborted(m: _Inputs, p: LlamaServerProcess, status: int | None) -> None:
        p._fail_start(p._abort_reason, status)

    @ready.upon(_Inputs.exited).to(failed)
    def _crash(m: _Inputs, p: LlamaServerProcess, status: int | None) -> None:
        p._crashed(status)

    @stopping.upon(_Inputs.exited).to(stopped)
    def _gone(m: _Inputs, p: LlamaServerProcess, status: int | None) -> None:
        p._stopped(status)

    return b.build()


_MACHINE = _build_machine()


# -- orphans -----------------------------------------------------------------------------


def _alive(pid: int, start: int | None) -> bool:
    st = _proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return start is None or st[2] == start


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st is not None and st[1] == pgid and st[0] not in ("Z", "X"):
                return True
    return False


def _cmdline_matches(cmdline: list[str], argv: list[str]) -> bool:
    """``cmdline`` runs ``argv``: same arguments at the end, and the executable (or a
    script of that name run by an interpreter, or our wrapper) among the words."""
    if not argv or len(cmdline) < len(argv):
        return False
    if argv[1:] and cmdline[len(cmdline) - len(argv) + 1 :] != argv[1:]:
        return False
    exe = os.path.basename(argv[0])
    head = cmdline[: len(cmdline) - len(argv) + 1]
    return any(os.path.basename(word) == exe for word in head)


def reap_orphans(
    state_dir: str | os.PathLike[str] | None = None, *, grace: float = 5.0
) -> list[int]:
    """Kill llama-server process groups left behind by a server_core that died.

    For each run-state file in ``state_dir`` (default ``default_state_dir()``): if the
    recorded owner (pid + start time) still runs, the file is left alone. Otherwise,
    if the recorded leader still runs (same start time when recorded), leads the
    recorded group and its ``/proc/PID/cmdline`` matches the recorded argv, its group
    gets SIGTERM, and SIGKILL after ``grace`` seconds. Stale files (leader gone, pid
    reused by another program) are removed without killing anything. Blocking: call it
    once at start-up, before the reactor runs. Returns the process groups signalled.
    """
    directory = Path(state_dir if state_dir is not None else default_state_dir())
    if not directory.is_dir():
        return []
    killed: list[tuple[int, Path]] = []
    for path in sorted(directory.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            owner = int(record["owner_pid"])
            owner_start = record.get("owner_start")
            pid = int(record["pid"])
            pgid = int(record.get("pgid", pid))
            child_start = record.get("child_start")
            argv = [str(a) for a in record["argv"]]
        except (OSError, ValueError, KeyError, TypeError):
            log.warn("removing unreadable run-state file {path}", path=str(path))
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        if _alive(owner, owner_start):
            continue  # a live server_core (maybe this one) owns it
        st = _proc_stat(pid)
        reason = None
        if st is None or st[0] in ("Z", "X"):
            reason = "no longer runs"
        elif child_start is not None and st[2] != child_start:
            reason = "pid was reused"
        elif st[1] != pgid:
            reason = "does not lead the recorded process group"
        else:
            cmdline = _proc_cmdline(pid)
            if cmdline is None or not _cmdline_matches(cmdline, argv):
                reason = "runs another command line"
        if reason is not None:
            log.info(
                "stale run-state file {path}: pid {pid} {reason}",
                path=str(path),
                pid=pid,
                reason=reason,
            )
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        log.warn(
            "orphaned llama-server group {pgid} (owner {owner} is gone): SIGTERM",
            pgid=pgid,
            owner=owner,
        )
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        killed.append((pgid, path))
    deadline = time.monotonic() + grace
    pending = [pgid for pgid, _ in killed]
    while pending and time.monotonic() < deadline:
        time.sleep(0.05)
        pending = [pgid for pgid in pending if _group_alive(pgid)]
    for pgid in pending:
        log.warn("orphaned group {pgid} ignored SIGTERM: SIGKILL", pgid=pgid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    # SIGKILL is delivered asynchronously: return only once the groups are gone, so the
    # caller never starts new children next to dying ones.
    deadline = time.monotonic() + 5.0
    while pending and time.monotonic() < deadline:
        pending = [pgid for pgid in pending if _group_alive(pgid)]
        if pending:
            time.sleep(0.01)
    for _, path in killed:
        with contextlib.suppress(OSError):
            path.unlink()
    return [pgid for pgid, _ in killed]
