"""``FakeLlamaProcess``: run ``fake-llama-server`` as a real child process.

Spawned as ``sys.executable -m harness.fake_llama ARGS`` (no PATH dependency) with
``reactor.spawnProcess``, in its own process group, and told to exit if the test
process disappears. ``started()`` fires when the child logs ``listening on
http://HOST:PORT``. Its output lines, waits and stop come from
``harness._process.LineProcessProtocol``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed

from harness._process import LineProcessProtocol
from harness.fake_llama.runner import ENV_NEW_PGRP, ENV_PARENT_PID

__all__ = ["FakeLlamaProcess", "ProcessExited"]

_LISTENING = re.compile(r"listening on (https?)://(\S+):(\d+)")


class ProcessExited(Exception):
    """The child exited before the awaited event; ``status`` is its exit status."""

    def __init__(self, status: int, output: list[str]) -> None:
        tail = "\n".join(output[-20:])
        super().__init__(f"fake-llama-server exited with status {status} before starting\n{tail}")
        self.status = status
        self.output = output


class FakeLlamaProcess(LineProcessProtocol):
    """A ``fake-llama-server`` child process.

    ``args`` are llama-server style arguments. When they hold no ``-m/--model`` a
    temporary model file is created (and removed on exit); when they hold no
    ``--port``, ``--port 0`` is added. ``faults`` is a convenience for one
    ``--fault SPEC``. It is its own ``ProcessProtocol``: ``output`` is every line,
    stdout and stderr, in arrival order.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        faults: str | None = None,
        reactor: Any = None,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        super().__init__("fake-llama-server", reactor)
        self.args = list(args)
        self._tmpdir: str | None = None
        if not any(a in ("-m", "--model") or a.startswith("--model=") for a in self.args):
            self._tmpdir = tempfile.mkdtemp(prefix="fake-llama-")
            model = os.path.join(self._tmpdir, "fake-model.gguf")
            with open(model, "wb") as fh:
                fh.write(b"GGUF")
            self.args[:0] = ["-m", model]
        if not any(a == "--port" or a.startswith("--port=") for a in self.args):
            self.args += ["--port", "0"]
        if faults:
            self.args += ["--fault", faults]
        self.python = python
        self.env = dict(os.environ if env is None else env)
        self.env[ENV_PARENT_PID] = str(os.getpid())
        self.env[ENV_NEW_PGRP] = "1"
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.output = self.lines  # the same list, under the name this class always had
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self.port: int | None = None
        self.host: str | None = None

    # -- info ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` as the child logged it; RuntimeError before that."""
        if self.port is None:
            raise RuntimeError("the fake has not reported its port yet")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Spawned and not ended yet."""
        return self.transport is not None and self.exit_status is None

    # -- control ---------------------------------------------------------------------

    def start(self) -> FakeLlamaProcess:
        """Spawn the child (idempotent). Returns self."""
        if self.transport is not None:
            return self
        argv = [self.python, "-m", "harness.fake_llama", *self.args]
        self.transport = self.reactor.spawnProcess(
            self, self.python, argv, env=self.env, childFDs={0: "w", 1: "r", 2: "r"}
        )
        return self

    def started(self) -> Deferred[int]:
        """Fires with the port once ``listening on http://...`` was logged (spawning
        if needed); errbacks with ProcessExited if the child dies first."""
        self.start()
        if self.port is not None:
            return succeed(self.port)
        return self.when_line(_LISTENING).addCallback(lambda match: int(match.group(3)))

    def wait_for_line(self, text: str) -> Deferred[str]:
        """Fires with the first output line (past or future) containing ``text``;
        errbacks with ProcessExited if the child ends first."""
        return self.when_line(re.escape(text)).addCallback(lambda match: match.string)

    def stop(self, grace: float = 5.0) -> Deferred[int]:
        """SIGTERM, then SIGKILL (to the process group) after ``grace`` seconds.
        Fires with the exit status (code, or -signal number)."""
        return Deferred.fromCoroutine(self._stop(grace))

    async def _stop(self, grace: float) -> int:
        if self.transport is None:
            self._cleanup_tmp()
            return 0
        status, _ = await self.terminate(grace)
        return status

    def kill(self) -> None:
        """SIGKILL the whole process group (the child leads its own), then the child."""
        pid = self.pid
        if pid is not None and self.running:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            self.signal("KILL")

    # -- LineProcessProtocol hooks ---------------------------------------------------

    def line_received(self, fd: int, line: str) -> None:
        """Sort the line by stream; the first ``listening on`` line gives host and port."""
        (self.stdout_lines if fd == 1 else self.stderr_lines).append(line)
        if self.port is None:
            m = _LISTENING.search(line)
            if m:
                self.host = m.group(2).strip("[]")
                self.port = int(m.group(3))

    def child_exited(self, status: int) -> None:
        """The temporary model file is no longer needed."""
        self._cleanup_tmp()

    def exit_error(self) -> Exception:
        """Waits for a line or for the start fail with ProcessExited."""
        return ProcessExited(self.exit_status or 0, self.output)

    def _cleanup_tmp(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
