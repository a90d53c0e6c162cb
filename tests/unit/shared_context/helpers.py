"""Stub processes, a stub template probe and small helpers for the shared context's tests.

Everything runs on a ``Clock``: a start takes ``START_TIME``, a stop ``STOP_TIME`` and a
template probe ``PROBE_TIME`` seconds of it, so no test sleeps or spawns a child.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface import implementer

from server_core.aliases import LocalAlias
from server_core.errors import ContextError
from server_core.interfaces import IServerProcess, IStateListener
from server_core.shared_context import ContextLimits, DefaultSharedContext
from server_core.template_check import TemplateVerdict

START_TIME = 2.0
STOP_TIME = 0.5
PROBE_TIME = 0.25


@implementer(IServerProcess)
class StubProcess:
    """A process whose start and stop take Clock time; tests can crash it."""

    spawned: list[StubProcess] = []

    def __init__(self, alias: LocalAlias, on_state: Any, clock: Clock, fail: bool = False):
        self.alias = alias.name
        self.state = "stopped"
        self.port: int | None = None
        self.pid: int | None = None
        self.base_url = ""
        self.last_error: str | None = None
        self.started_at: float | None = None
        self._on_state = on_state
        self._clock = clock
        self._fail = fail
        self._exit: list[defer.Deferred[Any]] = []
        StubProcess.spawned.append(self)

    def _set(self, new: str) -> None:
        old, self.state = self.state, new
        self._on_state(self, old, new)

    def start(self) -> defer.Deferred[None]:
        self._set("starting")
        self.pid = 1000 + len(StubProcess.spawned)
        d: defer.Deferred[None] = defer.Deferred()

        def done() -> None:
            if self.state != "starting":
                return
            if self._fail:
                self._set("failed")
                d.errback(ContextError(f"The model '{self.alias}' failed to start: exit 1"))
                return
            self.port = 20000 + len(StubProcess.spawned)
            self.base_url = f"http://127.0.0.1:{self.port}"
            self.started_at = self._clock.seconds()
            self._set("ready")
            d.callback(None)

        self._clock.callLater(START_TIME, done)
        return d

    def stop(self) -> defer.Deferred[int]:
        self._set("stopping")
        d: defer.Deferred[int] = defer.Deferred()

        def done() -> None:
            self._set("stopped")
            d.callback(0)

        self._clock.callLater(STOP_TIME, done)
        return d

    def crash(self) -> None:
        self._set("failed")

    def when_exited(self) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self._exit.append(d)
        return d

    def recent_logs(self) -> list[str]:
        return []

    def add_log_listener(self, listener: Any) -> None:
        pass

    def remove_log_listener(self, listener: Any) -> None:
        pass


def alias(name: str, ttl: float | None = None, priority: int = 0) -> LocalAlias:
    return LocalAlias(name=name, model_path=f"/m/{name}.gguf", source="user", request_params={},
                      ttl=ttl, priority=priority)  # fmt: skip


@implementer(IStateListener)
class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_state_change(self, event: str, alias: str, detail: dict[str, Any]) -> None:
        self.events.append((event, alias))


def build(
    verdict: TemplateVerdict | Exception | None = None,
    failing: frozenset[str] = frozenset(),
    **limits: Any,
) -> tuple[DefaultSharedContext, Clock, Recorder, Probe | None]:
    """A context on a fresh Clock, with a ``Probe`` answering ``verdict`` unless None."""
    StubProcess.spawned = []
    clock = Clock()
    probe = Probe(clock, verdict) if verdict is not None else None

    def factory(a: LocalAlias, on_state: Any) -> StubProcess:
        return StubProcess(a, on_state, clock, fail=a.name in failing)

    ctx = DefaultSharedContext(
        factory, clock=clock, limits=ContextLimits(**limits), template_probe=probe
    )
    rec = Recorder()
    ctx.add_state_listener(rec)
    return ctx, clock, rec, probe


def make(
    failing: frozenset[str] = frozenset(), **limits: Any
) -> tuple[DefaultSharedContext, Clock, Recorder]:
    ctx, clock, rec, _ = build(None, failing, **limits)
    return ctx, clock, rec


def result_of(d: defer.Deferred[Any]) -> Any:
    """The Deferred's result once it fired (captured once), else None."""
    box: list[Any] | None = getattr(d, "_test_box", None)
    if box is None:
        box = []
        d._test_box = box  # type: ignore[attr-defined]
        d.addBoth(box.append)
    return box[0] if box else None


def results(ds: list[defer.Deferred[Any]]) -> list[Any]:
    return [result_of(d) for d in ds]


class StrictStubProcess(StubProcess):
    """Like LlamaServerProcess: stopping a start fails the start's Deferred."""

    def start(self) -> defer.Deferred[None]:
        self._pending_start = super().start()
        return self._pending_start

    def stop(self) -> defer.Deferred[int]:
        was_starting = self.state == "starting"
        d = super().stop()
        if was_starting and not self._pending_start.called:
            self._pending_start.errback(ContextError(f"model '{self.alias}' was stopped"))
        return d


def make_strict(**limits: Any) -> tuple[DefaultSharedContext, Clock]:
    StubProcess.spawned = []
    clock = Clock()
    ctx = DefaultSharedContext(
        lambda a, on_state: StrictStubProcess(a, on_state, clock),
        clock=clock,
        limits=ContextLimits(**limits),
    )
    return ctx, clock


class Probe:
    """A probe that takes Clock time and answers what the test says."""

    def __init__(self, clock: Clock, verdict: TemplateVerdict | Exception) -> None:
        self.clock = clock
        self.verdict = verdict
        self.calls: list[tuple[str, str]] = []

    def __call__(self, alias_name: str, base_url: str) -> defer.Deferred[TemplateVerdict]:
        self.calls.append((alias_name, base_url))
        d: defer.Deferred[TemplateVerdict] = defer.Deferred()

        def answer() -> None:
            if isinstance(self.verdict, Exception):
                d.errback(self.verdict)
            else:
                d.callback(self.verdict)

        self.clock.callLater(PROBE_TIME, answer)
        return d


def context_with(verdict: TemplateVerdict | Exception) -> tuple[DefaultSharedContext, Clock, Probe]:
    ctx, clock, _, probe = build(verdict)
    assert probe is not None
    return ctx, clock, probe
