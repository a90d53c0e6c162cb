"""``twistd -n server-core`` as a child process of the chaos runner.

``spawn_server`` starts it with ``PYTHONPATH`` set to the source root of this checkout
(so the child imports this tree and finds ``twisted/plugins``), its run-state directory
inside the run's temporary directory, and ``PR_SET_PDEATHSIG`` so it dies with the
runner. ``ServerChild`` keeps its recent output lines and a log file, tells when a line
appears (``listening_port``) and stops it with SIGTERM like an operator would.
"""

from __future__ import annotations

import os
import re
from collections import deque
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet import error as ierror
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

import harness

__all__ = ["ServerChild", "child_env", "source_root", "spawn_server"]

_LISTENING = re.compile(r"server-core listening on http://([^\s:]+):(\d+)")

# Set PR_SET_PDEATHSIG before twistd starts, so the server dies with the runner even
# if the runner is killed with SIGKILL (Linux; elsewhere this is a no-op).
_TWISTD_PRELUDE = (
    "import signal, sys\n"
    "try:\n"
    "    import ctypes\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)\n"
    "except Exception:\n"
    "    pass\n"
    "from twisted.scripts.twistd import run\n"
    "run()\n"
)


def source_root() -> str | None:
    """The checkout holding ``harness`` when it also holds ``server_core`` (so the
    child twistd imports this tree and finds ``twisted/plugins``), else None."""
    root = Path(harness.__file__).resolve().parent.parent
    if (root / "server_core").is_dir():
        return str(root)
    return None


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every child: ours, this checkout first on ``PYTHONPATH``,
    unbuffered output (its lines are read as they come), plus ``extra``."""
    env = dict(os.environ)
    root = source_root()
    if root:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class ServerChild(ProcessProtocol):
    """``twistd -n server-core`` as a child: recent output lines, a log file, exit."""

    def __init__(self, log_path: str, reactor: Any) -> None:
        self.reactor = reactor
        self.lines: deque[str] = deque(maxlen=400)
        self._log = open(log_path, "a", encoding="utf-8")  # closed in processEnded
        self._partial = {1: b"", 2: b""}
        self._waiters: list[tuple[re.Pattern[str], defer.Deferred[re.Match[str]]]] = []
        self._exit_waiters: list[defer.Deferred[int | None]] = []
        self.exit_status: int | None = None
        self.exited = False

    @property
    def pid(self) -> int:
        """The pid of the twistd process."""
        return int(self.transport.pid)  # type: ignore[union-attr]

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buf = self._partial.get(childFD, b"") + data
        *complete, self._partial[childFD] = buf.split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            if not self._log.closed:
                self._log.write(line + "\n")
            for pattern, d in list(self._waiters):
                match = pattern.search(line)
                if match:
                    self._waiters.remove((pattern, d))
                    d.callback(match)

    def processEnded(self, reason: Failure) -> None:
        self.exited = True
        value = reason.value
        if isinstance(value, ierror.ProcessTerminated) and value.signal is not None:
            self.exit_status = -int(value.signal)
        else:
            self.exit_status = int(getattr(value, "exitCode", 0) or 0)
        self._log.close()
        waiters, self._waiters = self._waiters, []
        for _, d in waiters:
            d.errback(RuntimeError("server-core exited:\n" + "\n".join(list(self.lines)[-30:])))
        exits, self._exit_waiters = self._exit_waiters, []
        for ed in exits:
            ed.callback(self.exit_status)

    def when_line(self, regex: str, timeout: float) -> defer.Deferred[re.Match[str]]:
        """Fires with the first output line matching ``regex`` (seen or to come);
        fails when the child exits first or after ``timeout``."""
        pattern = re.compile(regex)
        for line in self.lines:
            match = pattern.search(line)
            if match:
                return defer.succeed(match)
        if self.exited:
            return defer.fail(RuntimeError("server-core exited:\n" + "\n".join(self.lines)))
        d: defer.Deferred[re.Match[str]] = defer.Deferred()
        self._waiters.append((pattern, d))
        return d.addTimeout(timeout, self.reactor)

    async def listening_port(self, timeout: float) -> int:
        """The port server-core says it listens on (its ``listening on`` line)."""
        match = await self.when_line(_LISTENING.pattern, timeout=timeout)
        return int(match.group(2))

    def when_exited(self) -> defer.Deferred[int | None]:
        """Fires with the exit status (``-signal`` when killed by a signal)."""
        if self.exited:
            return defer.succeed(self.exit_status)
        d: defer.Deferred[int | None] = defer.Deferred()
        self._exit_waiters.append(d)
        return d

    def signal(self, name: str) -> None:
        """Send signal ``name`` (``"TERM"``, ``"KILL"``) unless the child is gone."""
        if self.exited or self.transport is None:
            return
        try:
            self.transport.signalProcess(name)
        except ierror.ProcessExitedAlready:
            pass

    async def stop(self, timeout: float) -> tuple[int | None, bool]:
        """SIGTERM; SIGKILL after ``timeout``. Returns (exit status, stopped by itself)."""
        if self.exited:
            return self.exit_status, True
        exited = self.when_exited()
        self.signal("TERM")
        try:
            status = await exited.addTimeout(timeout, self.reactor)
            return status, True
        except defer.TimeoutError:
            self.signal("KILL")
            return await self.when_exited(), False


def spawn_server(reactor: Any, *, python: str, config_path: str, workdir: str) -> ServerChild:
    """Start ``twistd -n server-core --config config_path`` on a free loopback port,
    in ``workdir`` (its log and run-state directory go there)."""
    server = ServerChild(os.path.join(workdir, "server-core.log"), reactor)
    argv = [
        python,
        "-c",
        _TWISTD_PRELUDE,
        "-n",
        "--pidfile=",
        "server-core",
        "--config",
        config_path,
        "--port",
        "tcp:0:interface=127.0.0.1",
    ]
    state = os.path.join(workdir, "run")
    reactor.spawnProcess(
        server,
        python,
        argv,
        env=child_env({"XDG_RUNTIME_DIR": state}),
        path=workdir,
        childFDs={0: "w", 1: "r", 2: "r"},
    )
    return server
