"""A ``LlamaServerProcess`` running the fake llama-server as a real child, and waits.

The fake (``harness.fake_llama``) is started through the same code path a real
llama-server takes: the spawn wrapper, its own process group, ``--port 0``, the
``/health`` poll and the signals.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.logger import ILogObserver, LogEvent, formatEvent
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from zope.interface import implementer

import server_core
from server_core.process import LlamaServerProcess
from server_core.process.procfs import proc_stat
from tests.unit.process.support import make_alias

reactor: Any = _reactor

ROOT = str(Path(server_core.__file__).resolve().parent.parent)


def fake_executable(tmp_path: Path) -> str:
    """An executable that is the fake llama-server (shebang: this interpreter)."""
    script = tmp_path / "llama-server"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\nfrom harness.fake_llama.cli import main\nsys.exit(main())\n"
    )
    script.chmod(0o755)
    return str(script)


def real_proc(
    tmp_path: Path, faults: str = "", name: str = "m", **kw: Any
) -> tuple[LlamaServerProcess, list[tuple[str, str]]]:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    states: list[tuple[str, str]] = []
    params = ["--fault", faults] if faults else []
    proc = LlamaServerProcess(
        make_alias(name, str(model), params),
        fake_executable(tmp_path),
        ["-c", "256"],
        reactor=reactor,
        state_dir=tmp_path / "run",
        env={"PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")},
        on_state=lambda p, old, new: states.append((old, new)),
        **kw,
    )
    return proc, states


def within(d: defer.Deferred[Any], seconds: float) -> defer.Deferred[Any]:
    return d.addTimeout(seconds, reactor)


async def ensure_stopped(proc: LlamaServerProcess) -> None:
    await within(proc.stop(), 10)


def gone(pid: int) -> bool:
    st = proc_stat(pid)
    return st is None or st[0] in ("Z", "X")


async def get_status(url: str) -> int:
    pool = HTTPConnectionPool(reactor, persistent=False)
    response = await Agent(reactor, pool=pool).request(b"GET", url.encode())
    await readBody(response)
    return int(response.code)


class Freezer:
    """An ``on_event`` that SIGSTOPs ``pid`` at the ``after``-th event, and when (``at``).

    As a context manager it leaves no stopped process behind: SIGCONT at the exit if the
    process is still there (the liveness probe should have killed it by then).
    """

    def __init__(self, pid: int, after: int = 1) -> None:
        self.pid = pid
        self.after = after
        self.seen = 0
        self.at: float | None = None

    def __call__(self, event: Any, t: float) -> None:
        self.seen += 1
        if self.seen == self.after:
            os.kill(self.pid, signal.SIGSTOP)
            self.at = reactor.seconds()

    def __enter__(self) -> Freezer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not gone(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)


@implementer(ILogObserver)
class Captured:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event: LogEvent) -> None:
        if str(event.get("log_namespace", "")).startswith("server_core.process."):
            self.lines.append(formatEvent(event))
