"""The batching scheduler under random arrivals and stream lengths, on a Clock.

Streams end on their own within ``STREAM`` seconds (a client reading an answer), time
moves in ticks so waits are measured as they happen, and after every step:

- nobody starves: no request waits longer than ``max_wait`` plus, per other model that
  may be due before it, one stream and one swap (``BOUND``); the oldest one, the head of
  the line, within ``max_wait`` plus one stream and one swap;
- once a request is due and its model has no server, no request that arrived after it
  for another model is granted (the due swap is not overtaken), except the batch of a
  model just swapped in: the requests that waited for its start;
- no stream is cut: a leased server is never stopped;
- one start per model per batch: starts never exceed the runs of one model in the
  sequence of grants, plus the one starting now;
- arrival order within a model: each model's requests are granted in arrival order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from twisted.internet import defer
from zope.interface import implementer

from server_core.interfaces import IStateListener
from server_core.shared_context import Lease
from tests.unit.shared_context.helpers import START_TIME, STOP_TIME, StubProcess, alias, make

NAMES = ("a", "b", "c")
MAX_WAIT = 8.0
STREAM = 3.0  # the longest a stream in this model lasts
TICK = 0.25
SWAP = STREAM + STOP_TIME + START_TIME + 2 * TICK
HEAD_BOUND = MAX_WAIT + SWAP
BOUND = MAX_WAIT + len(NAMES) * SWAP


@dataclass
class Request:
    seq: int
    name: str
    arrived: float
    length: float
    granted_at: float | None = None
    lease: Lease | None = field(default=None, repr=False)


@implementer(IStateListener)
class BatchingModel(RuleBasedStateMachine):
    """Random arrivals of three models on one slot; invariants after each step."""

    max_loaded = 1

    def __init__(self) -> None:
        super().__init__()
        self.ctx, self.clock, _ = make(max_loaded=self.max_loaded, max_wait=MAX_WAIT, ttl=-1,
                                       max_queue=10_000, queue_timeout=10_000)  # fmt: skip
        self.requests: list[Request] = []
        self.grants: list[str] = []  # aliases in grant order
        self.bad: list[str] = []
        self.ready_at: dict[str, float] = {}
        self.ctx.add_state_listener(self)

    def on_state_change(self, event: str, alias: str, detail: dict[str, Any]) -> None:
        if event == "ready":
            self.ready_at[alias] = self.clock.seconds()

    def _granted(self, lease: Any, req: Request) -> Any:
        now = self.clock.seconds()
        req.granted_at, req.lease = now, lease
        self.grants.append(req.name)
        for other in self.requests:
            if other.granted_at is not None or other is req:
                continue
            if other.name == req.name and other.seq < req.seq:
                self.bad.append(f"{req} granted before the earlier {other}")
            due = now - other.arrived >= MAX_WAIT
            batch = req.arrived <= self.ready_at[req.name]
            if due and other.seq < req.seq and not batch and not self.ctx.process_for(other.name):
                self.bad.append(f"{req} overtook the due {other}")
        return lease

    @rule(name=st.sampled_from(NAMES), length=st.sampled_from([0.0, 0.5, 1.0, STREAM]))
    def request(self, name: str, length: float) -> None:
        req = Request(len(self.requests), name, self.clock.seconds(), length)
        self.requests.append(req)
        d: defer.Deferred[Any] = self.ctx.acquire(alias(name))
        d.addCallback(self._granted, req)

    @rule(seconds=st.sampled_from([TICK, 1.0, 3.0, 10.0]))
    def advance(self, seconds: float) -> None:
        for _ in range(round(seconds / TICK)):
            self._end_streams()
            self.clock.advance(TICK)
        self._end_streams()

    def _end_streams(self) -> None:
        now = self.clock.seconds()
        for req in self.requests:
            if req.lease is not None and req.granted_at is not None:
                if now - req.granted_at >= req.length:
                    req.lease.release()
                    req.lease = None

    @invariant()
    def nobody_starves(self) -> None:
        now = self.clock.seconds()
        pending = [r for r in self.requests if r.granted_at is None]
        for req in self.requests:
            waited = (req.granted_at if req.granted_at is not None else now) - req.arrived
            assert waited <= BOUND, (req, waited)
        if pending:
            assert now - pending[0].arrived <= HEAD_BOUND, pending[0]

    @invariant()
    def order_and_fairness_hold(self) -> None:
        assert not self.bad, self.bad

    @invariant()
    def no_stream_is_cut(self) -> None:
        for req in self.requests:
            if req.lease is not None:
                proc = self.ctx.process_for(req.name)
                assert proc is not None and proc.state == "ready", (req, proc)

    @invariant()
    def one_start_per_model_per_batch(self) -> None:
        runs = sum(1 for i, name in enumerate(self.grants) if i == 0 or self.grants[i - 1] != name)
        assert len(StubProcess.spawned) <= runs + self.max_loaded, (runs, self.grants)

    def teardown(self) -> None:
        # Once arrivals stop, every model still waited for is served by one more start.
        waiting = {r.name for r in self.requests if r.granted_at is None}
        before = len(StubProcess.spawned)
        self.advance(len(NAMES) * (SWAP + MAX_WAIT))
        assert all(r.granted_at is not None for r in self.requests)
        assert len(StubProcess.spawned) - before <= len(waiting)


BatchingModel.TestCase.settings = settings(max_examples=80, stateful_step_count=50, deadline=None)
TestBatchingModel = BatchingModel.TestCase


class TwoSlotBatchingModel(BatchingModel):
    """The same with two servers loaded at once: evictions choose among idle ones."""

    max_loaded = 2


TwoSlotBatchingModel.TestCase.settings = settings(
    max_examples=60, stateful_step_count=50, deadline=None
)
TestTwoSlotBatchingModel = TwoSlotBatchingModel.TestCase
