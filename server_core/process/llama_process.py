"""One managed llama-server child process (``IServerProcess``): ``LlamaServerProcess``.

The process is an automat machine (``server_core.process.lifecycle``: the states and
when they change) whose states carry their data (``server_core.process.phases``); this
class is the machine's core: it spawns (``spawn``: own process group, PDEATHSIG, the line
reader), polls readiness and then liveness (``health``), signals, records run-state files
(``orphans``), keeps the output (``output``) and fires the callers' Deferreds. ``state``, ``pid``,
``port``, ``base_url``, ``started_at``, ``last_error`` and ``exit_status`` are read from
the current state's data; nothing here sets a state.

The command line holds ``--port 0``: llama-server binds a free port and logs
``listening on http://HOST:PORT`` once the model has loaded (real builds on stderr;
both streams are read), and the ``/health`` poll begins.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from server_core.aliases import LocalAlias
from server_core.config import MANAGED_FLAGS, LlamaSettings
from server_core.flags import has_flag, merge_flags
from server_core.interfaces import IServerProcess
from server_core.process.health import HealthCheck, HttpHealthCheck, LivenessProbe, ReadinessPoll
from server_core.process.lifecycle import MACHINE, Inputs
from server_core.process.orphans import default_state_dir, remove_run_state, write_run_state
from server_core.process.output import OutputLog, client_safe_lines
from server_core.process.phases import (
    Child,
    Live,
    Phase,
    Ready,
    Starting,
    Stopped,
    Stopping,
    fail_all,
)
from server_core.process.spawn import ChildSpawner, LineReader, PosixSpawner, describe_exit

__all__ = ["STATES", "LlamaServerProcess"]

log = Logger()

STATES = ("stopped", "starting", "ready", "stopping", "failed")

_LISTENING = re.compile(r"listening on https?://(\[[^\]]*\]|[^\s:/]+):(\d+)")


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
    ``/health`` poll (for tests; then a ``Clock`` will do as ``reactor``). ``env`` is
    added to server_core's environment. While ready, ``liveness_misses`` probes in a row (one
    per ``liveness_interval``) without a 200 in ``liveness_timeout`` kill it (0: no probe).
    """

    def __init__(
        self,
        alias: LocalAlias,
        executable: str,
        args: Sequence[str],
        *,
        reactor: Any,  # time, and processes and TCP unless spawner and health_check are given
        start_timeout: float = 120.0,
        stop_grace: float = 10.0,
        poll_interval: float = 0.05,
        liveness_interval: float = LlamaSettings.liveness_interval,
        liveness_timeout: float = LlamaSettings.liveness_timeout,
        liveness_misses: int = LlamaSettings.liveness_misses,
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
        self.liveness = (liveness_interval, liveness_timeout, liveness_misses)
        self.host = host
        self.on_state = on_state
        self.state_dir = str(state_dir) if state_dir is not None else default_state_dir()
        self._env = dict(env or {})
        self._spawner: ChildSpawner = spawner or PosixSpawner(reactor)
        self._health: HealthCheck = health_check or HttpHealthCheck(reactor)
        self._output = OutputLog(self.alias, log_lines)
        # The current state's data: written only by the lifecycle's state factories. automat's
        # first state carries none; this stands for it until the first start.
        self.phase: Phase = Stopped()
        self._machine: Inputs = MACHINE(self)

    # -- what the current state says ------------------------------------------------------

    @property
    def state(self) -> str:
        """``stopped | starting | ready | stopping | failed``."""
        return self.phase.name

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs, else None."""
        return self.phase.pid

    @property
    def port(self) -> int | None:
        """The port the child listens on once it said so, else None."""
        return self.phase.port

    @property
    def started_at(self) -> float | None:
        """Clock time when the last run became ready (None from a start until ready)."""
        return self.phase.started_at

    @property
    def last_error(self) -> str | None:
        """Why the last start failed or the server died; None once ready again."""
        return self.phase.last_error

    @property
    def exit_status(self) -> int | None:
        """The last run's exit status (code, or ``-signal``); None while one runs."""
        return self.phase.exit_status

    @property
    def argv(self) -> list[str]:
        """The command line (without the spawn wrapper)."""
        model, host = self.local_alias.model_path, self.host
        return [self.executable, "--model", model, "--alias", self.alias, "--host", host,
                "--port", "0", *self._flags]  # fmt: skip

    @property
    def base_url(self) -> str | None:
        """``http://HOST:PORT`` once the port is known, else None."""
        port = self.port
        return None if port is None else self._url_for(port)

    def _url_for(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}"

    # -- public API --------------------------------------------------------------------

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
        child = self.phase.child
        if child is None or child.pid is None:
            return succeed(self.exit_status)
        d: Deferred[int | None] = Deferred()
        child.exit_waiters.append(d)
        return d

    def recent_logs(self) -> list[str]:
        """The last ``log_lines`` output lines (stdout and stderr, all runs)."""
        return self._output.recent()

    def add_log_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(line)`` for every future output line."""
        self._output.follow(listener)

    def remove_log_listener(self, listener: Callable[[str], None]) -> None:
        """Stop calling ``listener``; one that was never added is ignored."""
        self._output.unfollow(listener)

    def __repr__(self) -> str:
        return f"<LlamaServerProcess {self.alias!r} {self.state} pid={self.pid} port={self.port}>"

    # -- the lifecycle's side (lifecycle.Core: called by its transitions, the new state
    # -- already current) -----------------------------------------------------------------

    def announce(self, old: str) -> None:
        """Call ``on_state(self, old, new)``; a broken callback is logged, not raised."""
        new = self.state
        if old == new:
            return
        log.debug("[{alias}] {old} -> {new}", alias=self.alias, old=old, new=new)
        if self.on_state is not None:
            try:
                self.on_state(self, old, new)
            except Exception:
                log.failure("[{alias}] on_state callback failed", alias=self.alias)

    def launch(self, old: str) -> None:
        """Spawn the new ``Starting`` state's child and arm its readiness poll."""
        phase = self.phase
        assert isinstance(phase, Starting)
        child = phase.child
        log.info("[{alias}] starting: {argv}", alias=self.alias, argv=" ".join(child.argv))
        reader = LineReader(
            lambda line: self._on_line(child, line),
            lambda status: self._on_exited(child, status),
            lambda status: self._on_ended(child, status),
        )
        try:
            child.pid = self._spawner.spawn(reader, child.argv, {**os.environ, **self._env})
        except Exception:
            log.failure("[{alias}] cannot spawn {exe}", alias=self.alias, exe=self.executable)
            # Queued before anything on_state asks for: the start fails first, then that runs.
            self._machine.exited(None)
            self.announce(old)
            return
        child.unreaped = True
        child.state_file = write_run_state(self.state_dir, self.alias, child.pid, child.argv)
        phase.readiness = ReadinessPoll(
            self.reactor,
            self._health,
            timeout=self.start_timeout,
            interval=self.poll_interval,
            on_ready=self._machine.healthy,
            on_timeout=lambda: self._machine.start_failed(
                f"not ready after {self.start_timeout:g} s"
            ),
            alias=self.alias,
        )
        self.announce(old)

    def listening_on(self, starting: Starting, port: int) -> None:
        """Record the port (the first one said) and begin polling ``/health``."""
        child = starting.child
        if child.port is not None or starting.readiness is None:
            return
        child.port = port
        log.info("[{alias}] listening on port {port}", alias=self.alias, port=port)
        starting.readiness.poll(self._url_for(port))

    def become_ready(self, starting: Starting) -> None:
        """Log, begin the liveness probe, announce ``ready``, fire the start waiters."""
        url, ready, (every, timeout, misses) = self.base_url, self.phase, self.liveness
        log.info("[{alias}] ready at {url} (pid {pid})", alias=self.alias, url=url, pid=self.pid)
        if isinstance(ready, Ready) and url is not None and every > 0 and misses > 0:
            ready.liveness = LivenessProbe(
                self.reactor, self._health, url, interval=every, timeout=timeout,
                misses=misses, on_dead=self._machine.unresponsive, alias=self.alias,
            )  # fmt: skip
        self.announce(starting.name)
        for w in starting.start_waiters:
            w.callback(None)

    def terminate(self, old: Live) -> None:
        """Announce stopping and signal the group; SIGKILL after the grace."""
        self.announce(old.name)
        child = old.child
        if child.pid is None:
            self._machine.exited(child.status)
            return
        log.info("[{alias}] stopping pid {pid} (SIGTERM)", alias=self.alias, pid=child.pid)
        self._signal(child, signal.SIGTERM)
        if child.kill_timer is None:
            child.kill_timer = self.reactor.callLater(self.stop_grace, self._kill, child)

    def _kill(self, child: Child) -> None:
        child.kill_timer = None
        if child.pid is not None:
            log.warn("[{alias}] pid {pid} still running after {grace:g} s: SIGKILL",
                     alias=self.alias, pid=child.pid, grace=self.stop_grace)  # fmt: skip
            self._signal(child, signal.SIGKILL)

    def _signal(self, child: Child, sig: int) -> None:
        if child.pid is not None:
            self._spawner.signal_group(child.pid, sig, leader_alive=child.unreaped)

    def fail_start(self, old: Live, reason: str) -> None:
        """Fail the start waiters with a message a client may see; log the details."""
        message = f"model '{self.alias}' failed to start: {reason}"
        lines = client_safe_lines(old.child.tail)
        if lines:
            message += "; last output: " + " | ".join(lines)
        self.phase.last_error = message
        log.error(
            "[{alias}] failed to start: {reason}\ncommand: {argv}\nlast output:\n{tail}",
            alias=self.alias,
            reason=reason,
            argv=" ".join(old.child.argv),
            tail="\n".join(old.child.tail),
        )
        self._end_run(old)
        fail_all(old.start_waiters, message)
        old.fire_exit()

    def crashed(self, old: Ready) -> None:
        """Record and log the crash of a ready server; fire the exit waiters."""
        what = describe_exit(old.exit_status)
        self.phase.last_error = f"model '{self.alias}' {what} unexpectedly"
        tail = "\n".join(old.child.tail)
        log.error("[{alias}] {what} while serving; last output:\n{tail}",
                  alias=self.alias, what=what, tail=tail)  # fmt: skip
        self._end_run(old)
        old.fire_exit()

    def kill_unresponsive(self, old: Ready, reason: str) -> None:
        """Record why, SIGKILL the group (a stopped process dies of it too), announce
        ``failed`` at once; the exit is handled like a stop's (``finish_stop``)."""
        self.phase.last_error = f"model '{self.alias}' {reason}; it was killed"
        tail = "\n".join(old.child.tail)
        log.error("[{alias}] {reason}: SIGKILL to pid {pid}'s group; last output:\n{tail}",
                  alias=self.alias, reason=reason, pid=old.pid, tail=tail)  # fmt: skip
        self._signal(old.child, signal.SIGKILL)
        self.announce(old.name)

    def finish_stop(self, old: Stopping) -> None:
        """The stop is done: fail a start it cut short, fire waiters, restart if asked."""
        what = describe_exit(old.exit_status)
        log.info("[{alias}] stopped ({what})", alias=self.alias, what=what)
        self._end_run(old)
        fail_all(old.start_waiters, f"model '{self.alias}' was stopped while starting")
        old.fire_exit()
        for w in old.restart_waiters:
            self._machine.start(w)  # runs right after this transition

    def _end_run(self, old: Live) -> None:
        old.child.cancel_kill()
        self.announce(old.name)

    # -- child events -------------------------------------------------------------------

    def _on_line(self, child: Child, line: str) -> None:
        current = child is self.phase.child
        if current:
            child.tail.append(line)
        self._output.add(line)
        if current and child.port is None:
            m = _LISTENING.search(line)
            if m:
                self._machine.listening(int(m.group(2)))

    def _on_exited(self, child: Child, status: int | None) -> None:
        child.unreaped = False
        if child is not self.phase.child:
            return
        # The leader is gone; anything left in its group is a straggler holding our
        # pipes (processEnded waits for them). The group id cannot be reused while
        # members exist, so this reaches only the child's own leftovers.
        self._signal(child, signal.SIGKILL)
        # The server is dead now, not when the last pipe closes: a grandchild that left
        # the group could hold the pipes open for ever while traffic still came here.
        self._feed_exit(child, status)

    def _on_ended(self, child: Child, status: int | None) -> None:
        child.unreaped = False
        if child is self.phase.child:
            self._feed_exit(child, status)

    def _feed_exit(self, child: Child, status: int | None) -> None:
        if child.exit_fed:
            return
        child.exit_fed = True
        child.status = status
        path, child.state_file = child.state_file, None
        remove_run_state(path)
        self._machine.exited(status)
