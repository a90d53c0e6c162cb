"""``Runner``: one ``FakeServer`` as the whole ``fake-llama-server`` process.

Turns the server's events into llama-server's process behaviour: logs on stderr,
signal handling (none while loading, graceful then immediate afterwards), exit
codes, and an exit when the spawning parent disappears (no orphans in tests).
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import Any

from harness.fake_llama.server import BindError, FakeConfig, FakeServer

__all__ = ["ENV_NEW_PGRP", "ENV_PARENT_PID", "Runner", "log_to_stderr"]

ENV_PARENT_PID = "FAKE_LLAMA_PARENT_PID"  # exit when this parent goes away (no orphans)
ENV_NEW_PGRP = "FAKE_LLAMA_NEW_PGRP"  # start a new process group


def log_to_stderr(line: str) -> None:
    """Write one log line to stderr, whatever state stderr is in."""
    # Once the parent is gone the pipe is broken: a log line must never stop the
    # process from exiting (or from handling SIGTERM).
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class Runner:
    """Runs one FakeServer as the whole process."""

    def __init__(self, config: FakeConfig) -> None:
        from twisted.internet import reactor

        self.reactor: Any = reactor
        self.config = config
        self.exit_code = 0
        self.terminating = False
        self.server = FakeServer(
            config,
            reactor,
            log=log_to_stderr,
            on_load_failed=self._load_failed,
            on_crash=self._crash,
        )

    def run(self) -> int:
        pf = self.server.process_faults
        if os.environ.get(ENV_NEW_PGRP):
            try:
                os.setpgrp()
            except OSError:
                pass
        self._install_signals(ignore_term=pf.ignore_sigterm)
        try:
            self.server.listen()
        except BindError:
            return 1
        self.server.start_loading()
        self._watch_parent()
        self.reactor.run(installSignalHandlers=False)
        sys.stderr.flush()
        return self.exit_code

    # -- signals ---------------------------------------------------------------------

    def _install_signals(self, *, ignore_term: bool) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        if ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            log_to_stderr("srv  fake: (ignore_sigterm) SIGTERM will be ignored")
        else:
            signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.server.state in ("new", "loading"):
            # llama-server installs its handler only after the model loaded: before
            # that the default action applies and the process dies by the signal.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self.terminating:
            try:
                log_to_stderr("Received second interrupt, terminating immediately.")
            finally:
                os._exit(1)
        self.terminating = True
        self.reactor.callFromThread(self._graceful)

    def _graceful(self) -> None:
        self.server.log("srv    operator(): operator(): cleaning up before exit...")
        delay = self.server.process_faults.shutdown_delay

        def stopped(_: object) -> None:
            self.server.log("srv    operator(): HTTP server stopped")
            self.reactor.callLater(delay, self._stop_reactor)

        self.server.stop(abort=False).addCallback(stopped)

    def _stop_reactor(self) -> None:
        if self.reactor.running:
            self.reactor.stop()

    # -- lifecycle hooks -------------------------------------------------------------

    def _load_failed(self, server: FakeServer, reason: str) -> None:
        self.exit_code = 1
        self.reactor.callLater(0, self._stop_reactor)

    def _crash(self, server: FakeServer) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)

    def _watch_parent(self) -> None:
        pid = os.environ.get(ENV_PARENT_PID)
        if not pid or not pid.isdigit():
            return
        from twisted.internet.task import LoopingCall

        def check() -> None:
            if os.getppid() != int(pid):
                try:
                    log_to_stderr("srv  fake: parent process is gone, exiting")
                finally:
                    os._exit(1)

        LoopingCall(check).start(0.5, now=False)
