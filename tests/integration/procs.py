"""Child processes for tests: twistd server-core (and anything else) with readiness lines."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

import server_core

reactor: Any = _reactor

# Where server_core is imported from; its parent holds twisted/plugins in a checkout.
SOURCE_ROOT = str(Path(server_core.__file__).resolve().parent.parent)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Child(ProcessProtocol):
    """Collects output lines; lets a test wait for a line or for the exit."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self._partial = {1: b"", 2: b""}
        self._line_waiters: list[tuple[re.Pattern[str], defer.Deferred[re.Match[str]]]] = []
        self._exit_waiters: list[defer.Deferred[int | None]] = []
        self.exit_code: int | None = None
        self.exited = False

    def childDataReceived(self, fd: int, data: bytes) -> None:
        buf = self._partial.get(fd, b"") + data
        *complete, self._partial[fd] = buf.split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            for pattern, d in list(self._line_waiters):
                match = pattern.search(line)
                if match:
                    self._line_waiters.remove((pattern, d))
                    d.callback(match)

    def processEnded(self, reason: Failure) -> None:
        self.exited = True
        self.exit_code = getattr(reason.value, "exitCode", None)
        for _, d in self._line_waiters:
            d.errback(RuntimeError(f"{self.name} exited:\n" + "\n".join(self.lines[-30:])))
        self._line_waiters.clear()
        for d in self._exit_waiters:
            d.callback(self.exit_code)
        self._exit_waiters.clear()

    def when_line(self, regex: str, timeout: float = 20.0) -> defer.Deferred[re.Match[str]]:
        pattern = re.compile(regex)
        for line in self.lines:
            match = pattern.search(line)
            if match:
                return defer.succeed(match)
        d: defer.Deferred[re.Match[str]] = defer.Deferred()
        self._line_waiters.append((pattern, d))
        return d.addTimeout(timeout, reactor)

    def when_exited(self, timeout: float = 20.0) -> defer.Deferred[int | None]:
        if self.exited:
            return defer.succeed(self.exit_code)
        d: defer.Deferred[int | None] = defer.Deferred()
        self._exit_waiters.append(d)
        return d.addTimeout(timeout, reactor)

    def signal(self, name: str) -> None:
        if not self.exited:
            self.transport.signalProcess(name)  # type: ignore[union-attr]

    @property
    def pid(self) -> int:
        return int(self.transport.pid)  # type: ignore[union-attr]

    async def stop(self) -> int | None:
        if self.exited:
            return self.exit_code
        self.signal("TERM")
        try:
            return await self.when_exited(timeout=10)
        except defer.TimeoutError:
            self.signal("KILL")
            return await self.when_exited(timeout=5)


def spawn(name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
    child = Child(name)
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in [SOURCE_ROOT, full_env.get("PYTHONPATH", "")] if p
    )
    full_env["PYTHONUNBUFFERED"] = "1"
    full_env.update(env or {})
    reactor.spawnProcess(child, argv[0], argv, env=full_env, childFDs={0: "w", 1: "r", 2: "r"})
    return child


def twistd_argv(config_path: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "-n",
        "--pidfile=",
        "server-core",
        "--config",
        config_path,
        "--port",
        f"tcp:{port}:interface=127.0.0.1",
    ]


def fake_argv(model_path: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "harness.fake_llama", "-m", model_path, *args]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


__all__ = ["Child", "fake_argv", "free_port", "rss_kib", "signal", "spawn", "twistd_argv"]
