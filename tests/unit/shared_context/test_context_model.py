"""DefaultSharedContext under random requests, releases, time, crashes and unloads."""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet import defer
from zope.interface import implementer

from server_core.interfaces import IServerProcess, IStateListener
from server_core.shared_context import DefaultSharedContext, Lease
from server_core.template_check import CHECKED_OK, TemplateVerdict
from tests.unit.shared_context.helpers import StubProcess, alias, build, result_of

NAMES = ("a", "b", "c")


@implementer(IStateListener)
class GrantWatcher:
    """Checks each lease as it is granted: its server is up, announced ready (so past its
    template check) and not asked to unload (draining)."""

    def __init__(self, ctx: DefaultSharedContext) -> None:
        self.ctx = ctx
        self.announced: set[IServerProcess] = set()
        self.unloading: set[IServerProcess] = set()
        self.bad: list[tuple[str, str]] = []

    def on_state_change(self, event: str, alias: str, detail: dict[str, Any]) -> None:
        proc = self.ctx.process_for(alias)
        if event == "ready" and proc is not None:
            self.announced.add(proc)
        if event != "request":
            return
        if proc is None or proc.state != "ready":
            self.bad.append((alias, f"granted on a server that is {proc and proc.state}"))
        elif proc not in self.announced:
            self.bad.append((alias, "granted before the server was announced ready"))
        elif proc in self.unloading:
            self.bad.append((alias, "granted on a draining server"))


class ContextModel(RuleBasedStateMachine):
    """Random requests, releases, time, crashes and unloads; invariants after each step."""

    verdict: TemplateVerdict | None = None  # no template probe

    def __init__(self) -> None:
        super().__init__()
        self.ctx, self.clock, self.rec, _ = build(self.verdict, max_loaded=2, ttl=20,
                                                  max_queue=1000, queue_timeout=10_000)  # fmt: skip
        self.watcher = GrantWatcher(self.ctx)
        self.ctx.add_state_listener(self.watcher)
        self.pending: list[tuple[str, defer.Deferred[Any]]] = []
        self.leases: list[Lease] = []
        self.granted_wrong = 0

    def _collect(self) -> None:
        still = []
        for name, d in self.pending:
            result = result_of(d)
            if result is None:
                still.append((name, d))
                continue
            if isinstance(result, Lease):
                if result.alias != name:
                    self.granted_wrong += 1
                self.leases.append(result)
        self.pending = still

    @rule(name=st.sampled_from(NAMES))
    def request(self, name: str) -> None:
        d = self.ctx.acquire(alias(name))
        self.pending.append((name, d))
        self._collect()

    @precondition(lambda self: self.leases)
    @rule(i=st.integers(min_value=0, max_value=50))
    def finish(self, i: int) -> None:
        self.leases.pop(i % len(self.leases)).release()
        self._collect()

    @rule(seconds=st.sampled_from([0.1, 0.5, 2.0, 5.0, 30.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self._collect()

    @rule(name=st.sampled_from(NAMES))
    def crash(self, name: str) -> None:
        proc = self.ctx.process_for(name)
        if proc is not None and proc.state == "ready":
            proc.crash()  # type: ignore[attr-defined]
            # Leases on the dead server end with the stream's error.
            self.leases = [lease for lease in self.leases if lease.alias != name]
        self._collect()

    @rule(name=st.sampled_from(NAMES))
    def unload(self, name: str) -> None:
        proc = self.ctx.process_for(name)
        if proc is not None:
            self.watcher.unloading.add(proc)
        self.ctx.stop(name)
        self._collect()

    @invariant()
    def invariants_hold(self) -> None:
        live = [p for p in StubProcess.spawned if p.state in ("starting", "ready", "stopping")]
        # One process per alias, never more than max_loaded at once.
        assert len({p.alias for p in live}) == len(live)
        assert len(live) <= 2
        # Nobody is answered by another alias's model.
        assert self.granted_wrong == 0
        # A server with leases is never stopping.
        for lease in self.leases:
            proc = self.ctx.process_for(lease.alias)
            assert proc is not None and proc.state == "ready", (lease.alias, proc)
        # A lease is granted only on a ready slot: not starting, probing, draining or gone.
        assert not self.watcher.bad, self.watcher.bad

    def teardown(self) -> None:
        for lease in self.leases:
            lease.release()
        # Everything waiting is eventually served once leases end (no starvation). Each
        # round serves at least the head of the queue; a queue that alternates between
        # three models needs about one round per change of model, hence the budget.
        for _ in range(20 + len(self.pending)):
            self.clock.advance(10)
            self._collect()
            for lease in self.leases:
                lease.release()
            self.leases.clear()
        assert not self.pending, f"starved: {[n for n, _ in self.pending]}"


ContextModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestContextModel = ContextModel.TestCase


class ProbedContextModel(ContextModel):
    """The same with a chat-template probe between each start and the server's first lease."""

    verdict = CHECKED_OK


ProbedContextModel.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
TestProbedContextModel = ProbedContextModel.TestCase
