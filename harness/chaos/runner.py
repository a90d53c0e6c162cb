"""The chaos run: start the stack (spawn mode), send every planned request, judge it.

``run_chaos(options)`` draws the plans (``harness.chaos.draw``), starts fakes, netfault
lanes and server-core (spawn mode, ``harness.chaos.stack``) or uses a running server
(target mode), sends the requests at the wanted concurrency, lends each ``net_*``
request a lane with its toxic, judges every end (``harness.chaos.judge``), excuses the
collateral (``harness.chaos.collateral``), runs the after-run checks
(``harness.chaos.checks``) and returns a ``ChaosReport``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from twisted.internet import defer

from harness.chaos.actions import OnEvent, SideActions
from harness.chaos.checks import after_run_checks, target_checks
from harness.chaos.clean import first_unclean
from harness.chaos.collateral import attribute_collateral
from harness.chaos.draw import generate_plans
from harness.chaos.judge import judge
from harness.chaos.kinds import EITHER, LANE
from harness.chaos.options import ChaosOptions
from harness.chaos.plan import RequestPlan
from harness.chaos.records import RequestRecord
from harness.chaos.report import ChaosReport
from harness.chaos.served import resolve_dialects
from harness.chaos.stack import Lane, SpawnedStack
from harness.client import StreamResult, stream_request
from harness.netfault import Toxic

__all__ = ["CLIENT_GRACE", "run_chaos"]

# Extra seconds the client waits past a request's deadline before it gives up, so a
# late answer shows as `late` (with its time) rather than as a bare `timeout`.
CLIENT_GRACE = 5.0

Say = Callable[[str], None]


class _Target:
    """Target mode: someone else's server."""

    def __init__(self, url: str, model: str, expect_model: str | None) -> None:
        self.url = url
        self.model = model
        self.expected = expect_model or model

    def expected_model(self, alias: str) -> str:
        return self.expected


async def run_chaos(
    options: ChaosOptions,
    reactor: Any = None,
    log: Say | None = None,
) -> ChaosReport:
    """Run the chaos described by ``options`` on ``reactor`` (default: the global one).

    ``log`` receives progress lines (default: stderr). Never raises for what the server
    does: everything lands in the report (``setup_error`` when the stack did not start).
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    started = time.time()
    t0 = reactor.seconds()
    if options.spawn:
        return await _run_spawned(options, reactor, say, (started, t0))
    url, model = options.target, options.model
    assert url is not None and model is not None
    options, error = await resolve_dialects(options, url, model, reactor)
    if error is not None:
        return ChaosReport(options, [], [], started, 0.0, setup_error=error)
    target = _Target(url, model, options.expect_model)
    records = await _run_and_attribute(options, _plans(options), target, reactor, say)
    checks = await target_checks(options, reactor)
    return ChaosReport(options, records, checks, started, reactor.seconds() - t0)


def _plans(options: ChaosOptions) -> list[RequestPlan]:
    """The plans of the run (only the last one with ``--only-request``)."""
    settings = options.plan_settings()
    if options.only_request is not None:
        return [generate_plans(settings, options.seed, options.only_request + 1)[-1]]
    return generate_plans(settings, options.seed, options.requests)


async def _run_spawned(
    options: ChaosOptions,
    reactor: Any,
    say: Say,
    times: tuple[float, float],
) -> ChaosReport:
    """Spawn mode: start the stack, warm it up, see which dialects it serves, run,
    check, and always stop it. ``times`` is (wall clock, reactor clock) at the start."""
    started, t0 = times
    say(f"chaos: starting {options.fakes} fakes, {options.proxies} lanes, server-core")
    try:
        stack = await SpawnedStack.start(options.stack_settings(), reactor)
    except Exception as exc:
        return ChaosReport(options, [], [], started, 0.0, setup_error=_describe(exc))
    # Ctrl-C stops the reactor: stop the children first.
    shutdown_trigger = reactor.addSystemEventTrigger("before", "shutdown", stack.stop)
    try:
        say(f"chaos: server-core pid {stack.pid} on {stack.url} (dir {stack.tmpdir})")
        warm = await _warmup(stack, reactor)
        if not warm:
            alias = stack.settings.direct_aliases[0]
            options, warm = await resolve_dialects(options, stack.url, alias, reactor)
        if warm:
            tail = "\n".join(stack.log_tail())
            return ChaosReport(
                options, [], [], started, 0.0, setup_error=f"warmup failed: {warm}\n{tail}"
            )
        say(f"chaos: dialects {', '.join(options.dialects or ())}")
        base_census = stack.census()
        base_rss = stack.rss_kib()
        records = await _run_and_attribute(options, _plans(options), stack, reactor, say)
        checks = await after_run_checks(options, stack, reactor, base_census, base_rss)
    finally:
        reactor.removeSystemEventTrigger(shutdown_trigger)
        await stack.stop()
    return ChaosReport(options, records, checks, started, reactor.seconds() - t0)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if str(exc) else text


async def _warmup(stack: SpawnedStack, reactor: Any) -> str | None:
    """One clean request per alias (starts the managed child, fills nothing else)."""
    aliases = [*stack.settings.direct_aliases, *(lane.alias for lane in stack.lanes)]
    if stack.managed_alias:
        aliases.append(stack.managed_alias)
    return await first_unclean(stack, aliases, reactor, "chaos warmup")


async def _run_and_attribute(
    options: ChaosOptions,
    plans: Sequence[RequestPlan],
    env: SpawnedStack | _Target,
    reactor: Any,
    say: Say,
) -> list[RequestRecord]:
    say(f"chaos: seed {options.seed}: {len(plans)} request(s), concurrency {options.concurrency}")
    runner = _PlanRunner(options, env, reactor, say, total=len(plans))
    pending = iter(plans)
    workers = [
        defer.ensureDeferred(runner.work(pending))
        for _ in range(min(options.concurrency, len(plans)))
    ]
    await defer.gatherResults(workers, consumeErrors=True)
    records = sorted(runner.records, key=lambda r: r.plan.index)
    attribute_collateral(records, strict=options.strict)
    return records


class _PlanRunner:
    """Sends planned requests, lends each lane to one request at a time, judges every
    end and says how far it got every ``progress_every`` requests."""

    def __init__(
        self,
        options: ChaosOptions,
        env: SpawnedStack | _Target,
        reactor: Any,
        say: Say,
        total: int,
    ) -> None:
        self.options = options
        self.env = env
        self.reactor = reactor
        self.say = say
        self.total = total
        self.records: list[RequestRecord] = []
        self.lanes: defer.DeferredQueue[Lane] = defer.DeferredQueue()
        if isinstance(env, SpawnedStack):
            for lane in env.lanes:
                self.lanes.put(lane)
        live = env.live_fake if isinstance(env, SpawnedStack) else None
        self.actions = SideActions(reactor, env.url, live.url if live is not None else None)
        self.t_begin = reactor.seconds()
        self.n_violations = self.n_unexplained = 0

    async def work(self, pending: Iterator[RequestPlan]) -> None:
        """One worker: take the next plan until none is left."""
        for plan in pending:
            record = await self.one(plan)
            self.records.append(record)
            codes = [v.code for v in record.violations]
            if codes == ["unexpected_failure"]:
                self.n_unexplained += 1  # may turn out to be collateral of another fault
            else:
                self.n_violations += len(codes)
            self._progress()

    def _progress(self) -> None:
        done = len(self.records)
        every = self.options.progress_every
        if every and (done % every == 0 or done == self.total):
            rate = done / max(1e-9, self.reactor.seconds() - self.t_begin)
            self.say(
                f"chaos: {done}/{self.total} requests, {rate:.1f} req/s, "
                f"{self.n_violations} violation(s), {self.n_unexplained} failure(s) to attribute"
            )

    async def one(self, plan: RequestPlan) -> RequestRecord:
        """Send one planned request and judge its end."""
        lane: Lane | None = None
        if plan.route == LANE:
            lane = await self.lanes.get()
            alias = lane.alias
            if plan.toxic is not None:
                toxic = Toxic.create(
                    plan.toxic.type, stream=plan.toxic.stream, attributes=plan.toxic.attributes
                )
                lane.proxy.install(toxic)
        else:
            assert plan.alias is not None
            alias = plan.alias
        starts = [self.reactor.seconds()]

        async def send(on_event: OnEvent | None) -> StreamResult:
            # The request starts when it is sent, not while it waits for the live
            # fake or for another freeze to end.
            starts.append(self.reactor.seconds())
            return await self._send(plan, alias, on_event)

        try:
            result, froze = await self.actions.send(plan, send)
        finally:
            if lane is not None:
                lane.proxy.reset()
                self.lanes.put(lane)
        t_start, t_end = starts[-1], self.reactor.seconds()
        expected_model = self.env.expected_model(alias)
        record = RequestRecord(plan, alias, expected_model, result, t_start, t_end)
        judged = plan
        if plan.freeze_after is not None and not froze:
            # No child to freeze in time: an ordinary slow stream, it may succeed.
            judged = dataclasses.replace(plan, expect=EITHER, freezes_process=False)
            record.plan = judged
        record.violations = judge(judged, result, expected_model=expected_model)
        return record

    async def _send(self, plan: RequestPlan, alias: str, on_event: OnEvent | None) -> StreamResult:
        headers = {"X-Fault": plan.spec} if plan.spec else None
        return await stream_request(
            self.env.url + plan.endpoint,
            dict(plan.body, model=alias),
            headers=headers,
            timeout=plan.deadline + CLIENT_GRACE,
            reactor=self.reactor,
            max_events=0,
            disconnect_after=plan.disconnect_after,
            on_event=on_event,
        )
