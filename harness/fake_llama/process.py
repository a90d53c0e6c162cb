"""``FakeLlamaProcess``: run ``fake-llama-server`` as a real child process.

Spawned as ``sys.executable -m harness.fake_llama ARGS`` (no PATH dependency) with
``reactor.spawnProcess``, in its own process group, and told to exit if the test
process disappears. ``started()`` fires when the child logs ``listening on
http://HOST:PORT``.
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

from twisted.internet import error as ierror
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

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


class _Protocol(ProcessProtocol):
    def __init__(self, owner: FakeLlamaProcess) -> None:
        self.owner = owner
        self._partial = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buf = self._partial.get(childFD, b"") + data
        *lines, rest = buf.split(b"\n")
        self._partial[childFD] = rest
        for raw in lines:
            self.owner._line(childFD, raw.decode("utf-8", "replace").rstrip("\r"))

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._partial.items():
            if rest:
                self.owner._line(fd, rest.decode("utf-8", "replace"))
        self._partial = {1: b"", 2: b""}
        value = reason.value
        status: int
        if isinstance(value, ierror.ProcessTerminated) and value.signal is not None:
            status = -int(value.signal)
        else:
            status = int(getattr(value, "exitCode", 0) or 0)
        self.owner._ended(status)


class FakeLlamaProcess:
    """A ``fake-llama-server`` child process.

    ``args`` are llama-server style arguments. When they hold no ``-m/--model`` a
    temporary model file is created (and removed on exit); when they hold no
    ``--port``, ``--port 0`` is added. ``faults`` is a convenience for one
    ``--fault SPEC``.
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
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.reactor = reactor
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
        self.output: list[str] = []  # every line, stdout and stderr, in arrival order
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self.port: int | None = None
        self.host: str | None = None
        self.exit_status: int | None = None
        self.transport: IProcessTransport | None = None
        self._started: list[Deferred[int]] = []
        self._exited: list[Deferred[int]] = []
        self._line_waiters: list[tuple[str, Deferred[str]]] = []

    # -- info ------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self.transport is None else self.transport.pid

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the fake has not reported its port yet")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.transport is not None and self.exit_status is None

    # -- control ---------------------------------------------------------------------

    def start(self) -> FakeLlamaProcess:
        """Spawn the child (idempotent). Returns self."""
        if self.transport is not None:
            return self
        argv = [self.python, "-m", "harness.fake_llama", *self.args]
        self.transport = self.reactor.spawnProcess(
            _Protocol(self), self.python, argv, env=self.env, childFDs={0: "w", 1: "r", 2: "r"}
        )
        return self

    def started(self) -> Deferred[int]:
        """Fires with the port once ``listening on http://...`` was logged (spawning
        if needed); errbacks with ProcessExited if the child dies first."""
        self.start()
        if self.port is not None:
            return succeed(self.port)
        if self.exit_status is not None:
            return fail(ProcessExited(self.exit_status, self.output))
        d: Deferred[int] = Deferred()
        self._started.append(d)
        return d

    def when_exited(self) -> Deferred[int]:
        """A fresh Deferred firing with the exit status (code, or -signal)."""
        if self.exit_status is not None:
            return succeed(self.exit_status)
        d: Deferred[int] = Deferred()
        self._exited.append(d)
        return d

    def wait_for_line(self, text: str) -> Deferred[str]:
        """Fires with the first output line (past or future) containing ``text``."""
        for line in self.output:
            if text in line:
                return succeed(line)
        if self.exit_status is not None:
            return fail(ProcessExited(self.exit_status, self.output))
        d: Deferred[str] = Deferred()
        self._line_waiters.append((text, d))
        return d

    def signal(self, sig: int | str) -> None:
        """Send a signal (``signal.SIGTERM``, ``"TERM"``, ``"KILL"``...) to the child."""
        if not self.running or self.transport is None:
            return
        name = sig if isinstance(sig, str) else signal.Signals(sig).name
        name = name.removeprefix("SIG")
        try:
            self.transport.signalProcess(name)
        except ierror.ProcessExitedAlready:
            pass

    def stop(self, grace: float = 5.0) -> Deferred[int]:
        """SIGTERM, then SIGKILL (to the process group) after ``grace`` seconds.
        Fires with the exit status (code, or -signal number)."""
        return Deferred.fromCoroutine(self._stop(grace))

    async def _stop(self, grace: float) -> int:
        if self.transport is None:
            self._cleanup_tmp()
            return 0
        if self.exit_status is not None:
            return self.exit_status
        exited = self.when_exited()
        self.signal("TERM")
        killer = self.reactor.callLater(grace, self._kill)
        try:
            return await exited
        finally:
            if killer.active():
                killer.cancel()

    def _kill(self) -> None:
        pid = self.pid
        if pid is not None and self.running:
            try:
                os.killpg(pid, signal.SIGKILL)  # the child leads its own group
            except OSError:
                pass
            self.signal("KILL")

    # -- protocol callbacks ----------------------------------------------------------

    def _line(self, fd: int, line: str) -> None:
        self.output.append(line)
        (self.stdout_lines if fd == 1 else self.stderr_lines).append(line)
        if self.port is None:
            m = _LISTENING.search(line)
            if m:
                self.host = m.group(2).strip("[]")
                self.port = int(m.group(3))
                waiters, self._started = self._started, []
                for sd in waiters:
                    sd.callback(self.port)
        if self._line_waiters:
            keep = []
            for text, ld in self._line_waiters:
                if text in line:
                    ld.callback(line)
                else:
                    keep.append((text, ld))
            self._line_waiters = keep

    def _ended(self, status: int) -> None:
        self.exit_status = status
        self._cleanup_tmp()
        exc = ProcessExited(status, self.output)
        started, self._started = self._started, []
        for sd in started:
            sd.errback(Failure(exc))
        waiters, self._line_waiters = self._line_waiters, []
        for _, ld in waiters:
            ld.errback(Failure(ProcessExited(status, self.output)))
        exited, self._exited = self._exited, []
        for ed in exited:
            ed.callback(status)

    def _cleanup_tmp(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
