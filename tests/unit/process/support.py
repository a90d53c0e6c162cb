"""Fakes for driving ``LlamaServerProcess`` on a ``Clock``: no child process, no network.

``FakeSpawner`` records spawns and signals and lets a test play the child through the
protocol it was given; ``FakeHealth`` answers each ``/health`` poll as the test says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet import error as ierror
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from server_core.aliases import LocalAlias
from server_core.process import LlamaServerProcess


def make_alias(
    name: str = "m", model: str = "/models/m.gguf", params: Sequence[str] = ()
) -> LocalAlias:
    return LocalAlias(
        name=name, model_path=model, source="user", request_params={}, context_params=tuple(params)
    )


class FakeSpawner:
    """Records spawns and signals; the test plays the child through its protocol."""

    def __init__(self) -> None:
        self.protocols: list[ProcessProtocol] = []
        self.argvs: list[list[str]] = []
        self.signals: list[tuple[int, int]] = []
        self.fail = False

    def spawn(self, protocol: ProcessProtocol, argv: Sequence[str], env: Mapping[str, str]) -> int:
        if self.fail:
            raise OSError(2, "No such file or directory: '/opt/secret/llama-server'")
        self.protocols.append(protocol)
        self.argvs.append(list(argv))
        return 4_100_000 + len(self.protocols)  # above any real pid; never signalled

    def signal_group(self, pid: int, sig: int, *, leader_alive: bool) -> None:
        self.signals.append((pid, sig))

    # the child's side
    def say(self, line: str, fd: int = 2) -> None:
        self.protocols[-1].childDataReceived(fd, line.encode() + b"\n")

    def exit(self, code: int | None = 0, sig: int | None = None) -> None:
        proto = self.protocols[-1]
        reason: Failure
        if code == 0 and sig is None:
            reason = Failure(ierror.ProcessDone(0))
        else:
            reason = Failure(ierror.ProcessTerminated(exitCode=code, signal=sig))
        proto.processExited(reason)
        proto.processEnded(reason)


class FakeHealth:
    """``/health`` answers the test gives, one per poll.

    With ``frozen_on`` set (a clock), the child is frozen: every poll from then on times
    out on that clock, as ``HttpHealthCheck``'s ``addTimeout`` does, and its time is kept
    in ``frozen_asked``.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, defer.Deferred[int | None]]] = []
        self.frozen_on: task.Clock | None = None
        self.frozen_asked: list[float] = []

    def __call__(self, base_url: str, timeout: float) -> defer.Deferred[int | None]:
        d: defer.Deferred[int | None] = defer.Deferred()
        self.calls.append((base_url, d))
        if self.frozen_on is not None:
            self.frozen_asked.append(self.frozen_on.seconds())
            d.addTimeout(timeout, self.frozen_on)
            d.addErrback(lambda _: None)
        return d

    def answer(self, status: int | None) -> None:
        self.calls[-1][1].callback(status)


class Rig:
    """A LlamaServerProcess on a Clock with the fakes above; ``states`` records on_state."""

    def __init__(self, tmp_path: Path, **kw: Any) -> None:
        self.clock = task.Clock()
        self.spawner = FakeSpawner()
        self.health = FakeHealth()
        self.states: list[tuple[str, str]] = []
        kw.setdefault("start_timeout", 10.0)
        kw.setdefault("stop_grace", 3.0)
        kw.setdefault("liveness_interval", 0)  # no probes unless a test asks for them
        self.proc = LlamaServerProcess(
            make_alias(),
            "/opt/secret/llama-server",
            ["-c", "2048"],
            reactor=self.clock,
            on_state=lambda p, old, new: self.states.append((old, new)),
            state_dir=tmp_path / "run",
            spawner=self.spawner,
            health_check=self.health,
            **kw,
        )

    def make_ready(self) -> defer.Deferred[None]:
        d = self.proc.start()
        self.spawner.say("srv  llama_server: server is listening on http://127.0.0.1:5555")
        self.health.answer(200)
        return d


def result_of(d: defer.Deferred[Any]) -> Any:
    """The result of a Deferred that must have fired (a failure is returned, not raised)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    return out[0]
