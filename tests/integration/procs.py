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

import server_core
from harness._process import LineProcessProtocol, rss_kib

reactor: Any = _reactor

# Where server_core is imported from; its parent holds twisted/plugins in a checkout.
SOURCE_ROOT = str(Path(server_core.__file__).resolve().parent.parent)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Child(LineProcessProtocol):
    """Collects output lines; lets a test wait for a line or for the exit (20 s at most)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, reactor)

    @property
    def pid(self) -> int:
        return int(self.transport.pid)  # type: ignore[union-attr]

    def when_line(
        self, regex: str | re.Pattern[str], timeout: float | None = 20.0
    ) -> defer.Deferred[re.Match[str]]:
        return super().when_line(regex, timeout)

    def when_exited(self, timeout: float | None = 20.0) -> defer.Deferred[int]:
        return super().when_exited(timeout)

    async def stop(self) -> int:
        """SIGTERM; SIGKILL after 10 s, then 5 s more at most."""
        status, _ = await self.terminate(10, kill_grace=5)
        return status


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


__all__ = ["Child", "fake_argv", "free_port", "rss_kib", "signal", "spawn", "twistd_argv"]
