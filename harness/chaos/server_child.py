"""``twistd -n server-core`` as a child process of the chaos runner.

``spawn_server`` starts it with ``PYTHONPATH`` set to the source root of this checkout
(so the child imports this tree and finds ``twisted/plugins``), its run-state directory
inside the run's temporary directory, and ``PR_SET_PDEATHSIG`` so it dies with the
runner. ``ServerChild`` keeps its recent output lines and a log file, tells when a line
appears (``listening_port``) and stops it with SIGTERM like an operator would; the line
and exit plumbing is ``harness._process.LineProcessProtocol``'s.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import harness
from harness._process import LineProcessProtocol

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


class ServerChild(LineProcessProtocol):
    """``twistd -n server-core`` as a child: its last 400 output lines, a log file, exit."""

    def __init__(self, log_path: str, reactor: Any) -> None:
        super().__init__("server-core", reactor, keep=400)
        self._log = open(log_path, "a", encoding="utf-8")  # closed in child_exited

    @property
    def pid(self) -> int:
        """The pid of the twistd process (spawned as soon as it is made)."""
        return int(self.transport.pid)  # type: ignore[union-attr]

    def line_received(self, fd: int, line: str) -> None:
        """Every line goes to the log file too, for the report and a human."""
        if not self._log.closed:
            self._log.write(line + "\n")

    def child_exited(self, status: int) -> None:
        """The log is complete: close it."""
        self._log.close()

    async def listening_port(self, timeout: float) -> int:
        """The port server-core says it listens on (its ``listening on`` line)."""
        match = await self.when_line(_LISTENING, timeout=timeout)
        return int(match.group(2))

    async def stop(self, timeout: float) -> tuple[int, bool]:
        """SIGTERM; SIGKILL after ``timeout``. Returns (exit status, stopped by itself)."""
        return await self.terminate(timeout)


def spawn_server(
    reactor: Any, *, python: str, config_path: str, workdir: str, port: int = 0
) -> ServerChild:
    """Start ``twistd -n server-core --config config_path`` on loopback ``port`` (0: a
    free one), in ``workdir`` (its log and run-state directory go there)."""
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
        f"tcp:{port}:interface=127.0.0.1",
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
