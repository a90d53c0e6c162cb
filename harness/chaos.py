"""``harness chaos``: load + seeded random faults + invariant checks.

Runs N requests at concurrency C against server_core (``--spawn``: it starts fake
upstreams, netfault lanes and ``twistd -n server-core`` itself) or against any running
OpenAI-compatible server in front of a fake llama-server (``--target URL --model M``).
Every request gets a fault drawn from one ``random.Random(seed)`` (see
``harness.chaos_plan``) and its end is judged (``harness.chaos_judge``): an honest end
or a violation. After the run (spawn mode) the server must be healthy, hold no client
connection, no more file descriptors than at the start, a bounded RSS, and leave no
child process behind once stopped.

Each violation prints the command that replays exactly that request:
``python -m harness.chaos ... --seed S --only-request I``. See docs/chaos.md.

API::

    add_arguments(parser); run(args) -> int; main(argv=None) -> int
    ChaosOptions, run_chaos(options, reactor=None, log=None) -> Deferred-able ChaosReport
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from harness.chaos_judge import VIOLATION_CODES, Violation, judge
from harness.chaos_plan import (
    KINDS,
    LANE,
    SUCCEED,
    PlanSettings,
    RequestPlan,
    generate_plans,
)
from harness.chaos_stack import (
    FdCensus,
    Lane,
    SpawnedStack,
    StackSettings,
    descendants,
    sleep,
    wait_until_gone,
)
from harness.client import (
    CONNECT_ERROR,
    DISCONNECTED,
    DONE,
    ERROR_EVENT,
    HTTP_ERROR,
    TIMEOUT,
    TRUNCATED,
    StreamResult,
    stream_request,
)
from harness.netfault import Toxic

__all__ = [
    "ChaosOptions",
    "ChaosReport",
    "Check",
    "RequestRecord",
    "add_arguments",
    "main",
    "run",
    "run_chaos",
]

OUTCOME_COLUMNS = (DONE, HTTP_ERROR, ERROR_EVENT, DISCONNECTED, TRUNCATED, TIMEOUT, CONNECT_ERROR)
# Extra seconds the client waits past a request's deadline before it gives up, so a
# late answer shows as `late` (with its time) rather than as a bare `timeout`.
CLIENT_GRACE = 5.0
# A managed request failing this close to a crash of the managed child is collateral.
CRASH_WINDOW = 1.5
# An HTTP error this close to the end of a request that closed or aborted its upstream
# connection (same upstream) is collateral: a pool race (see attribute_collateral).
STALE_WINDOW = 0.1


# -- options --------------------------------------------------------------------------


@dataclass(frozen=True)
class ChaosOptions:
    """Everything a run depends on (``from_args`` builds it from the command line)."""

    target: str | None = None  # None = spawn mode
    model: str | None = None
    expect_model: str | None = None
    requests: int = 1000
    concurrency: int = 16
    seed: int = 0
    stream_ratio: float = 0.8
    only_request: int | None = None
    kinds: tuple[str, ...] = tuple(KINDS)
    fakes: int = 2
    proxies: int = 3
    managed: bool = True
    idle_timeout: float | None = None  # spawn: 1.5 s unless given; target: unknown
    header_timeout: float | None = None  # spawn: 2.5 s unless given; target: unknown
    fake_seed: int = 0
    margin: float = 5.0
    managed_margin: float = 15.0
    delay_scale: float = 1.0
    max_rss_growth_mb: float = 50.0
    fd_tolerance: int = 8
    json_path: str | None = None
    progress_every: int = 100
    keep_dir: bool = False
    strict: bool = False  # no "closed_connection" excuse for unexpected failures

    @property
    def spawn(self) -> bool:
        return self.target is None

    @property
    def spawn_idle_timeout(self) -> float:
        return self.idle_timeout if self.idle_timeout is not None else 1.5

    @property
    def spawn_header_timeout(self) -> float:
        return self.header_timeout if self.header_timeout is not None else 2.5

    def stack_settings(self) -> StackSettings:
        return StackSettings(
            fakes=self.fakes,
            lanes=self.proxies,
            managed=self.managed,
            parallel=max(16, 2 * self.concurrency),
            fake_seed=self.fake_seed,
            proxy_seed=self.seed,
            idle_timeout=self.spawn_idle_timeout,
            header_timeout=self.spawn_header_timeout,
            keep_dir=self.keep_dir,
        )

    def plan_settings(self) -> PlanSettings:
        if self.spawn:
            stack = self.stack_settings()
            return PlanSettings(
                aliases=stack.direct_aliases,
                managed_alias="chaos-managed" if self.managed else None,
                lanes=self.proxies,
                kinds=self.kinds,
                stream_ratio=self.stream_ratio,
                fake_seed=self.fake_seed,
                idle_timeout=self.spawn_idle_timeout,
                header_timeout=self.spawn_header_timeout,
                delay_scale=self.delay_scale,
                margin=self.margin,
                managed_margin=self.managed_margin,
            )
        assert self.model is not None
        return PlanSettings(
            aliases=(self.model,),
            managed_alias=None,
            lanes=0,
            kinds=self.kinds,
            stream_ratio=self.stream_ratio,
            fake_seed=self.fake_seed,
            idle_timeout=self.idle_timeout,
            header_timeout=self.header_timeout,
            delay_scale=self.delay_scale,
            margin=self.margin,
            managed_margin=self.managed_margin,
        )

    def reproduce_argv(self, index: int) -> list[str]:
        """The command that replays request ``index`` alone (same draws, same stack)."""
        argv = [sys.executable, "-m", "harness.chaos"]
        if self.spawn:
            argv += ["--spawn", "--fakes", str(self.fakes), "--proxies", str(self.proxies)]
            if not self.managed:
                argv.append("--no-managed")
            argv += ["--idle-timeout", _num(self.spawn_idle_timeout)]
            argv += ["--header-timeout", _num(self.spawn_header_timeout)]
        else:
            assert self.target is not None and self.model is not None
            argv += ["--target", self.target, "--model", self.model]
            if self.expect_model:
                argv += ["--expect-model", self.expect_model]
            if self.idle_timeout is not None:
                argv += ["--idle-timeout", _num(self.idle_timeout)]
            if self.header_timeout is not None:
                argv += ["--header-timeout", _num(self.header_timeout)]
        argv += [
            "--seed",
            str(self.seed),
            "--stream-ratio",
            _num(self.stream_ratio),
            "--kinds",
            ",".join(self.plan_settings().enabled_kinds()),
            "--fake-seed",
            str(self.fake_seed),
            "--margin",
            _num(self.margin),
            "--managed-margin",
            _num(self.managed_margin),
            "--delay-scale",
            _num(self.delay_scale),
            "--only-request",
            str(index),
        ]
        if self.strict:
            argv.append("--strict")
        return argv

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ChaosOptions:
        if args.target is None and args.model is not None:
            raise ValueError("--model goes with --target (spawn mode names its own aliases)")
        if args.target is not None and not args.model:
            raise ValueError("--target needs --model (the alias to ask for)")
        kinds = _kind_list(args.kinds) if args.kinds else list(KINDS)
        excluded = set(_kind_list(args.exclude_kinds)) if args.exclude_kinds else set()
        kinds = [k for k in kinds if k not in excluded]
        seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
        if not 0.0 <= args.stream_ratio <= 1.0:
            raise ValueError("--stream-ratio must be within 0..1")
        if args.requests < 1 or args.concurrency < 1:
            raise ValueError("--requests and --concurrency must be >= 1")
        if args.fakes < 1 or args.fakes > 26 or args.proxies < 0:
            raise ValueError("--fakes must be 1..26 and --proxies >= 0")
        options = cls(
            target=args.target.rstrip("/") if args.target else None,
            model=args.model,
            expect_model=args.expect_model,
            requests=args.requests,
            concurrency=args.concurrency,
            seed=seed,
            stream_ratio=args.stream_ratio,
            only_request=args.only_request,
            kinds=tuple(kinds),
            fakes=args.fakes,
            proxies=args.proxies,
            managed=not args.no_managed,
            idle_timeout=args.idle_timeout,
            header_timeout=args.header_timeout,
            fake_seed=args.fake_seed,
            margin=args.margin,
            managed_margin=args.managed_margin,
            delay_scale=args.delay_scale,
            max_rss_growth_mb=args.max_rss_growth_mb,
            fd_tolerance=args.fd_tolerance,
            json_path=args.json,
            progress_every=args.progress,
            keep_dir=args.keep_dir,
            strict=args.strict,
        )
        if not options.plan_settings().enabled_kinds():
            raise ValueError("no fault kind left to run (see --list-kinds)")
        return options


def _num(x: float) -> str:
    return f"{x:g}"


def _kind_list(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown fault kind(s) {', '.join(unknown)} (see --list-kinds)")
    return kinds


# -- results --------------------------------------------------------------------------


@dataclass
class RequestRecord:
    """One request as run: its plan, where it went, what came back, the verdict."""

    plan: RequestPlan
    alias: str
    expected_model: str | None
    result: StreamResult
    t_start: float
    t_end: float
    violations: list[Violation] = field(default_factory=list)
    collateral: str | None = None  # why an unexpected failure was excused (see below)
    collateral_of: list[int] = field(default_factory=list)  # the requests that explain it

    @property
    def duration(self) -> float:
        return self.t_end - self.t_start


@dataclass
class Check:
    """A check of the server after the run (health, fds, RSS, children)."""

    name: str
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, **self.data}


@dataclass
class ChaosReport:
    options: ChaosOptions
    records: list[RequestRecord]
    checks: list[Check]
    started: float
    elapsed: float
    setup_error: str | None = None

    @property
    def request_violations(self) -> list[tuple[RequestRecord, Violation]]:
        return [(r, v) for r in self.records for v in r.violations]

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def n_violations(self) -> int:
        return len(self.request_violations) + len(self.failed_checks)

    @property
    def ok(self) -> bool:
        return self.setup_error is None and self.n_violations == 0

    @property
    def exit_code(self) -> int:
        if self.setup_error is not None:
            return 2
        return 0 if self.n_violations == 0 else 1

    def kind_table(self) -> dict[str, dict[str, Any]]:
        """Per fault kind: requests, outcome counts, violations, collateral, timings."""
        table: dict[str, dict[str, Any]] = {}
        for kind in KINDS:
            recs = [r for r in self.records if r.plan.kind == kind]
            if not recs:
                continue
            outcomes = Counter(r.result.outcome for r in recs)
            durations = sorted(r.duration for r in recs)
            table[kind] = {
                "requests": len(recs),
                "outcomes": {o: outcomes.get(o, 0) for o in OUTCOME_COLUMNS},
                "violations": sum(len(r.violations) for r in recs),
                "requests_with_violations": sum(1 for r in recs if r.violations),
                "collateral": sum(1 for r in recs if r.collateral),
                "p50_s": round(durations[len(durations) // 2], 3),
                "max_s": round(durations[-1], 3),
            }
        return table

    def to_json(self) -> dict[str, Any]:
        opts = self.options
        outcomes = Counter(r.result.outcome for r in self.records)
        by_code = Counter(v.code for _, v in self.request_violations)
        reasons = Counter(r.collateral for r in self.records if r.collateral)
        t_first = min((r.t_start for r in self.records), default=0.0)
        return {
            "version": 1,
            "ok": self.ok,
            "mode": "spawn" if opts.spawn else "target",
            "target": opts.target,
            "seed": opts.seed,
            "requests": len(self.records),
            "concurrency": opts.concurrency,
            "only_request": opts.only_request,
            "elapsed_s": round(self.elapsed, 3),
            "rate_per_s": round(len(self.records) / self.elapsed, 2) if self.elapsed else None,
            "setup_error": self.setup_error,
            "outcomes": {o: outcomes.get(o, 0) for o in OUTCOME_COLUMNS},
            "kinds": self.kind_table(),
            "violation_counts": dict(sorted(by_code.items())),
            "collateral_counts": dict(sorted(reasons.items())),
            "violations": [
                {
                    "index": r.plan.index,
                    "code": v.code,
                    "detail": v.detail,
                    "kind": r.plan.kind,
                    "plan": r.plan.describe(),
                    "alias": r.alias,
                    "spec": r.plan.spec,
                    "result": r.result.summary(),
                    "reproduce": shlex.join(opts.reproduce_argv(r.plan.index)),
                    "reproduce_argv": opts.reproduce_argv(r.plan.index),
                }
                for r, v in self.request_violations
            ],
            "collateral": [
                {
                    "index": r.plan.index,
                    "kind": r.plan.kind,
                    "reason": r.collateral,
                    "near": r.collateral_of[:5],
                    "outcome": r.result.outcome,
                    "status": r.result.status,
                    "error": (r.result.error or {}).get("message"),
                    "t_start": round(r.t_start - t_first, 3),
                    "duration": round(r.duration, 3),
                }
                for r in self.records
                if r.collateral
            ],
            "checks": [c.to_json() for c in self.checks],
            "records": [
                {
                    "index": r.plan.index,
                    "kind": r.plan.kind,
                    "alias": r.alias,
                    "spec": r.plan.spec,
                    "toxic": None if r.plan.toxic is None else r.plan.toxic.describe(),
                    "stream": r.plan.stream,
                    "expect": r.plan.expect,
                    "outcome": r.result.outcome,
                    "status": r.result.status,
                    "t_start": round(r.t_start - t_first, 4),
                    "duration": round(r.duration, 4),
                    "violations": [v.code for v in r.violations],
                    "collateral": r.collateral,
                }
                for r in self.records
            ],
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(opts).items()},
        }

    def format_text(self) -> str:
        """The human report: the per-kind table, the checks, every violation."""
        opts = self.options
        lines: list[str] = []
        mode = "spawn" if opts.spawn else f"target {opts.target} model {opts.model}"
        rate = len(self.records) / self.elapsed if self.elapsed else 0.0
        lines.append(
            f"chaos: seed {opts.seed}, {len(self.records)} requests, concurrency "
            f"{opts.concurrency}, {mode}: {self.elapsed:.1f} s ({rate:.1f} req/s)"
        )
        if self.setup_error:
            lines.append(f"SETUP FAILED: {self.setup_error}")
        short = {
            DONE: "done",
            HTTP_ERROR: "http_err",
            ERROR_EVENT: "err_event",
            DISCONNECTED: "disconn",
            TRUNCATED: "trunc",
            TIMEOUT: "timeout",
            CONNECT_ERROR: "conn_err",
        }
        head = (
            f"{'kind':<15}{'reqs':>6}"
            + "".join(f"{short[o]:>10}" for o in OUTCOME_COLUMNS)
            + f"{'collat':>8}{'viol':>6}{'p50 s':>8}{'max s':>8}"
        )
        lines += ["", head, "-" * len(head)]
        table = self.kind_table()
        totals: Counter[str] = Counter()
        for kind, row in table.items():
            lines.append(
                f"{kind:<15}{row['requests']:>6}"
                + "".join(f"{row['outcomes'][o]:>10}" for o in OUTCOME_COLUMNS)
                + f"{row['collateral']:>8}{row['violations']:>6}"
                + f"{row['p50_s']:>8.2f}{row['max_s']:>8.2f}"
            )
            totals["requests"] += row["requests"]
            totals["collateral"] += row["collateral"]
            totals["violations"] += row["violations"]
            for o in OUTCOME_COLUMNS:
                totals[o] += row["outcomes"][o]
        lines.append("-" * len(head))
        lines.append(
            f"{'total':<15}{totals['requests']:>6}"
            + "".join(f"{totals[o]:>10}" for o in OUTCOME_COLUMNS)
            + f"{totals['collateral']:>8}{totals['violations']:>6}"
        )
        reasons = Counter(r.collateral for r in self.records if r.collateral)
        if reasons:
            lines.append(
                "collateral (unexpected failures explained by another request's fault): "
                + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
            )
        if self.checks:
            lines.append("")
            for c in self.checks:
                lines.append(f"check {c.name:<16} {'ok  ' if c.ok else 'FAIL'} {c.detail}")
        viols = self.request_violations
        if viols:
            lines.append("")
            lines.append(f"{len(viols)} request violation(s):")
            for r, v in viols:
                lines.append(f"  #{r.plan.index} {v.code}: {v.detail}")
                lines.append(f"      {r.plan.describe()} -> {r.alias}")
                lines.append(f"      reproduce: {shlex.join(opts.reproduce_argv(r.plan.index))}")
        lines.append("")
        if self.ok:
            lines.append("OK: no violation")
        else:
            lines.append(f"FAILED: {self.n_violations} violation(s)")
        return "\n".join(lines)


# -- the run --------------------------------------------------------------------------


class _Target:
    """Target mode: someone else's server."""

    def __init__(self, url: str, model: str, expect_model: str | None) -> None:
        self.url = url
        self.model = model
        self.expected = expect_model or model

    def expected_model(self, alias: str) -> str:
        return self.expected


async def _get_json(reactor: Any, url: str, timeout: float = 5.0) -> StreamResult:
    return await stream_request(url, None, method="GET", timeout=timeout, reactor=reactor)


async def run_chaos(
    options: ChaosOptions,
    reactor: Any = None,
    log: Callable[[str], None] | None = None,
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
    settings = options.plan_settings()
    if options.only_request is not None:
        plans = [generate_plans(settings, options.seed, options.only_request + 1)[-1]]
    else:
        plans = generate_plans(settings, options.seed, options.requests)

    stack: SpawnedStack | None = None
    env: SpawnedStack | _Target
    records: list[RequestRecord] = []
    checks: list[Check] = []
    shutdown_trigger: Any = None
    try:
        if options.spawn:
            say(f"chaos: starting {options.fakes} fakes, {options.proxies} lanes, server-core")
            try:
                stack = await SpawnedStack.start(options.stack_settings(), reactor)
            except Exception as exc:
                return ChaosReport(options, [], [], started, 0.0, setup_error=_describe(exc))
            # Ctrl-C stops the reactor: stop the children first.
            running_stack = stack
            shutdown_trigger = reactor.addSystemEventTrigger(
                "before", "shutdown", running_stack.stop
            )
            env = stack
            say(f"chaos: server-core pid {stack.pid} on {stack.url} (dir {stack.tmpdir})")
            warm = await _warmup(stack, reactor)
            if warm:
                tail = "\n".join(stack.log_tail())
                return ChaosReport(
                    options, [], [], started, 0.0, setup_error=f"warmup failed: {warm}\n{tail}"
                )
            base_census = stack.census()
            base_rss = stack.rss_kib()
        else:
            assert options.target is not None and options.model is not None
            env = _Target(options.target, options.model, options.expect_model)
        say(
            f"chaos: seed {options.seed}: {len(plans)} request(s), concurrency "
            f"{options.concurrency}"
        )
        records = await _run_plans(options, plans, env, reactor, say)
        attribute_collateral(records, strict=options.strict)
        if stack is not None:
            checks = await _after_run(options, stack, reactor, base_census, base_rss)
        else:
            checks = await _target_checks(options, reactor)
    finally:
        if stack is not None:
            if shutdown_trigger is not None:
                reactor.removeSystemEventTrigger(shutdown_trigger)
            await stack.stop()
    report = ChaosReport(options, records, checks, started, reactor.seconds() - t0)
    return report


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if str(exc) else text


async def _warmup(stack: SpawnedStack, reactor: Any) -> str | None:
    """One clean request per alias (starts the managed child, fills nothing else)."""
    aliases = [*stack.settings.direct_aliases, *(lane.alias for lane in stack.lanes)]
    if stack.managed_alias:
        aliases.append(stack.managed_alias)
    for alias in aliases:
        body = {
            "model": alias,
            "messages": [{"role": "user", "content": "chaos warmup"}],
            "max_tokens": 4,
            "stream": True,
        }
        r = await stream_request(
            stack.url + "/v1/chat/completions",
            body,
            timeout=stack.settings.start_timeout + 10,
            reactor=reactor,
        )
        if r.outcome != DONE:
            return f"{alias}: {r.outcome} {r.summary()}"
    return None


async def _run_plans(
    options: ChaosOptions,
    plans: Sequence[RequestPlan],
    env: SpawnedStack | _Target,
    reactor: Any,
    say: Callable[[str], None],
) -> list[RequestRecord]:
    lanes: defer.DeferredQueue[Lane] = defer.DeferredQueue()
    if isinstance(env, SpawnedStack):
        for lane in env.lanes:
            lanes.put(lane)
    records: list[RequestRecord] = []
    pending = iter(plans)
    total = len(plans)
    t_begin = reactor.seconds()
    n_violations = n_unexplained = 0

    async def one(plan: RequestPlan) -> RequestRecord:
        lane: Lane | None = None
        if plan.route == LANE:
            lane = await lanes.get()
            alias = lane.alias
            if plan.toxic is not None:
                toxic = Toxic.create(
                    plan.toxic.type, stream=plan.toxic.stream, attributes=plan.toxic.attributes
                )
                lane.proxy.install(toxic)
        else:
            assert plan.alias is not None
            alias = plan.alias
        body = dict(plan.body, model=alias)
        headers = {"X-Fault": plan.spec} if plan.spec else None
        t_start = reactor.seconds()
        try:
            result = await stream_request(
                env.url + plan.endpoint,
                body,
                headers=headers,
                timeout=plan.deadline + CLIENT_GRACE,
                reactor=reactor,
                max_events=0,
                disconnect_after=plan.disconnect_after,
            )
        finally:
            if lane is not None:
                lane.proxy.reset()
                lanes.put(lane)
        t_end = reactor.seconds()
        expected_model = env.expected_model(alias)
        record = RequestRecord(plan, alias, expected_model, result, t_start, t_end)
        record.violations = judge(plan, result, expected_model=expected_model)
        return record

    async def worker() -> None:
        nonlocal n_violations, n_unexplained
        for plan in pending:
            record = await one(plan)
            records.append(record)
            codes = [v.code for v in record.violations]
            if codes == ["unexpected_failure"]:
                n_unexplained += 1  # may turn out to be collateral of another fault
            else:
                n_violations += len(codes)
            done = len(records)
            every = options.progress_every
            if every and (done % every == 0 or done == total):
                rate = done / max(1e-9, reactor.seconds() - t_begin)
                say(
                    f"chaos: {done}/{total} requests, {rate:.1f} req/s, "
                    f"{n_violations} violation(s), {n_unexplained} failure(s) to attribute"
                )

    workers = [defer.ensureDeferred(worker()) for _ in range(min(options.concurrency, len(plans)))]
    await defer.gatherResults(workers, consumeErrors=True)
    records.sort(key=lambda r: r.plan.index)
    return records


def _ends_upstream_connection(r: RequestRecord) -> bool:
    """Did this request's end close or abort its upstream connection? (The upstream
    closed it, or server_core aborted it after an error event or a client that left.)"""
    if r.plan.closes_connection:
        return True
    if r.result.outcome in (ERROR_EVENT, DISCONNECTED):
        return True
    return r.result.outcome == HTTP_ERROR and r.plan.expect != SUCCEED


def attribute_collateral(records: Sequence[RequestRecord], *, strict: bool = False) -> None:
    """Excuse ``unexpected_failure``s that another request's fault explains.

    * ``crash``: the managed child died (``crash_after`` of a request it was serving)
      with this request in flight, or just before it was sent; nothing can save the
      streams of a dead process.
    * ``pool_race`` (not with ``strict``): an HTTP error while, on the same upstream, a
      request whose end closed or aborted its upstream connection ended within
      ``STALE_WINDOW``: the closing connection was handed out again by server_core's
      connection pool. Honest, but a robustness defect of the server: the report counts
      these apart, and ``--strict`` makes them violations.
    A record is excused only when its one violation is ``unexpected_failure``.
    """
    kills = [(r.alias, r.t_start, r.t_end) for r in records if r.plan.kills_process]
    enders = [(r.alias, r.t_end, r.plan.index) for r in records if _ends_upstream_connection(r)]
    for r in records:
        if [v.code for v in r.violations] != ["unexpected_failure"]:
            continue
        if any(
            alias == r.alias and cs < r.t_end and r.t_start < ce + CRASH_WINDOW
            for alias, cs, ce in kills
        ):
            r.violations, r.collateral = [], "crash"
        elif not strict and r.result.outcome == HTTP_ERROR:
            near = [
                i
                for alias, end, i in enders
                if alias == r.alias
                and i != r.plan.index
                and r.t_start - STALE_WINDOW <= end <= r.t_end + STALE_WINDOW
            ]
            if near:
                r.violations, r.collateral = [], "pool_race"
                r.collateral_of = near


async def _poll(
    reactor: Any, probe: Callable[[], Any], timeout: float, interval: float = 0.1
) -> Any:
    """Call ``probe`` (sync or async) until it returns a truthy value or time is up;
    returns the last value."""
    deadline = reactor.seconds() + timeout
    while True:
        value = probe()
        if isinstance(value, defer.Deferred) or hasattr(value, "__await__"):
            value = await value
        if value or reactor.seconds() >= deadline:
            return value
        await sleep(reactor, interval)


async def _busy_slots(reactor: Any, urls: Sequence[str]) -> dict[str, int]:
    busy: dict[str, int] = {}
    for url in urls:
        r = await _get_json(reactor, url + "/slots")
        slots = r.json_body if isinstance(r.json_body, list) else []
        n = sum(1 for s in slots if isinstance(s, dict) and s.get("is_processing"))
        if n or r.outcome != DONE:
            busy[url] = n if r.outcome == DONE else -1
    return busy


async def _after_run(
    options: ChaosOptions,
    stack: SpawnedStack,
    reactor: Any,
    base: FdCensus,
    base_rss: int,
) -> list[Check]:
    checks: list[Check] = []
    settings = stack.settings
    t_phase = reactor.seconds()

    def add(check: Check) -> None:
        nonlocal t_phase
        now = reactor.seconds()
        check.data["took_s"] = round(now - t_phase, 3)
        t_phase = now
        checks.append(check)

    # Managed child(ren) as server_core reports them.
    running = await _get_json(reactor, stack.url + "/running")
    entries = running.json_body.get("data", []) if isinstance(running.json_body, dict) else []
    managed_pids = [int(e["pid"]) for e in entries if isinstance(e, dict) and e.get("pid")]
    managed_urls = [
        f"http://127.0.0.1:{e['port']}" for e in entries if isinstance(e, dict) and e.get("port")
    ]

    # Upstream slots: every generation ended (disconnects and timeouts were passed on).
    fake_urls = [f.url for f in stack.fakes] + managed_urls
    busy: dict[str, int] = {}

    async def slots_idle() -> bool:
        nonlocal busy
        busy = await _busy_slots(reactor, fake_urls)
        return not busy

    idle = await _poll(reactor, slots_idle, timeout=settings.idle_timeout + 8.0, interval=0.2)
    add(
        Check(
            "upstream_slots",
            bool(idle),
            "every upstream generation ended" if idle else f"still busy: {busy}",
            {"busy": busy},
        )
    )

    health = await _get_json(reactor, stack.url + "/health")
    add(
        Check(
            "health",
            health.outcome == DONE and health.status == 200,
            f"GET /health -> {health.status} {health.outcome}",
        )
    )

    # No client connection left once every client is gone.
    census = stack.census()

    def no_clients() -> bool:
        nonlocal census
        census = stack.census()
        return census.client_conns == 0

    await _poll(reactor, no_clients, timeout=5.0)
    hosts = settings.fakes + settings.lanes + (1 if settings.managed else 0)
    pool_cap = options.concurrency * hosts + options.fd_tolerance
    base_fixed = base.total - base.upstream_conns
    now_fixed = census.total - census.upstream_conns
    fds_ok = (
        census.client_conns == 0
        and now_fixed <= base_fixed + options.fd_tolerance
        and census.upstream_conns <= pool_cap
    )
    add(
        Check(
            "fds",
            fds_ok,
            f"{base.total} -> {census.total} open fds; without the upstream pool "
            f"{base_fixed} -> {now_fixed} (tolerance {options.fd_tolerance}); "
            f"client connections {census.client_conns}; pooled upstream "
            f"{census.upstream_conns} (cap {pool_cap})",
            {"before": base.to_json(), "after": census.to_json()},
        )
    )

    rss = stack.rss_kib()
    growth_mb = (rss - base_rss) / 1024.0
    add(
        Check(
            "rss",
            growth_mb <= options.max_rss_growth_mb,
            f"{base_rss / 1024:.1f} -> {rss / 1024:.1f} MiB ({growth_mb:+.1f} MiB, "
            f"bound {options.max_rss_growth_mb:g})",
            {"before_kib": base_rss, "after_kib": rss, "growth_mb": round(growth_mb, 2)},
        )
    )

    # Stop server_core like an operator: nothing of it may stay behind.
    children = sorted(set(descendants(stack.pid)) | set(managed_pids))
    status, in_time = await stack.stop_server()
    add(
        Check(
            "stop",
            in_time and status == 0,
            f"SIGTERM -> exit status {status}" + ("" if in_time else " (needed SIGKILL)"),
            {"exit_status": status},
        )
    )
    left = await wait_until_gone(children, reactor, timeout=5.0)
    add(
        Check(
            "children",
            not left,
            (
                f"still alive after stop: {left}"
                if left
                else f"{len(children)} child process(es) {children} all gone"
                + ("" if managed_pids else " (no managed child was running at the end)")
            ),
            {"children": children, "managed_pids": managed_pids, "left": left},
        )
    )
    return checks


async def _target_checks(options: ChaosOptions, reactor: Any) -> list[Check]:
    assert options.target is not None
    health = await _get_json(reactor, options.target + "/health")
    if health.status == 404:
        return [Check("health", True, "GET /health -> 404 (not offered; not checked)")]
    return [
        Check(
            "health",
            health.outcome == DONE and health.status == 200,
            f"GET /health -> {health.status} {health.outcome}",
        )
    ]


# -- command line ---------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``harness chaos`` options."""
    mode = parser.add_argument_group("what to test")
    mode.add_argument(
        "--spawn",
        action="store_true",
        help="start fakes, netfault lanes and twistd server-core (the default without --target)",
    )
    mode.add_argument("--target", metavar="URL", help="a running server in front of a fake")
    mode.add_argument("--model", metavar="M", help="with --target: the model alias to ask for")
    mode.add_argument(
        "--expect-model",
        metavar="X",
        help="with --target: the model id responses must carry (default: --model)",
    )
    load = parser.add_argument_group("load")
    load.add_argument("--requests", "-n", type=int, default=1000, help="requests (default 1000)")
    load.add_argument("--concurrency", "-c", type=int, default=16, help="in flight (default 16)")
    load.add_argument(
        "--seed", type=int, default=None, help="seed of every choice (default random)"
    )
    load.add_argument(
        "--stream-ratio", type=float, default=0.8, help="share of streaming requests (0.8)"
    )
    load.add_argument(
        "--only-request", type=int, metavar="I", help="run only request I of the seed (reproduce)"
    )
    faults = parser.add_argument_group("faults")
    faults.add_argument("--kinds", metavar="K,K", help="only these fault kinds (see --list-kinds)")
    faults.add_argument("--exclude-kinds", metavar="K,K", help="leave these fault kinds out")
    faults.add_argument("--list-kinds", action="store_true", help="print the fault kinds and exit")
    faults.add_argument("--fakes", type=int, default=2, help="spawn: fake upstreams (2)")
    faults.add_argument(
        "--proxies", type=int, default=3, help="spawn: netfault lanes (3; 0 = none)"
    )
    faults.add_argument(
        "--no-managed", action="store_true", help="spawn: no managed alias (no crash faults)"
    )
    faults.add_argument(
        "--idle-timeout",
        type=float,
        metavar="S",
        help="server's upstream idle timeout (spawn: set to this, default 1.5; target: "
        "enables stall faults)",
    )
    faults.add_argument(
        "--header-timeout",
        type=float,
        metavar="S",
        help="server's upstream header timeout (spawn: default 2.5; target: enables hang)",
    )
    faults.add_argument(
        "--fake-seed", type=int, default=0, help="the fakes' --seed (the text depends on it)"
    )
    faults.add_argument(
        "--delay-scale", type=float, default=1.0, help="multiply every injected delay (1.0)"
    )
    checks = parser.add_argument_group("checks and output")
    checks.add_argument(
        "--margin", type=float, default=5.0, help="deadline slack per request in seconds (5)"
    )
    checks.add_argument(
        "--managed-margin",
        type=float,
        default=15.0,
        help="extra slack for the managed alias, which restarts after crashes (15)",
    )
    checks.add_argument(
        "--max-rss-growth-mb", type=float, default=50.0, help="spawn: RSS growth bound (50)"
    )
    checks.add_argument(
        "--fd-tolerance", type=int, default=8, help="spawn: extra fds allowed after the run (8)"
    )
    checks.add_argument("--json", metavar="FILE", help="write the JSON report here")
    checks.add_argument(
        "--progress", type=int, default=100, metavar="N", help="progress every N requests (0 off)"
    )
    checks.add_argument("--keep-dir", action="store_true", help="spawn: keep the temporary dir")
    checks.add_argument(
        "--strict",
        action="store_true",
        help="no pool_race excuse: an HTTP error of a fault-free request next to a "
        "request that closed or aborted its upstream connection is a violation",
    )


def _list_kinds() -> str:
    lines = [f"{'kind':<16}{'weight':>7}  {'needs':<15} what"]
    for kind, info in KINDS.items():
        lines.append(f"{kind:<16}{info.weight:>7g}  {info.needs or '-':<15} {info.doc}")
    lines.append("")
    lines.append("violation codes:")
    lines += [f"  {code:<22} {text}" for code, text in VIOLATION_CODES.items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``harness chaos`` with parsed ``args`` on the global reactor; exit status:
    0 no violation, 1 violations, 2 bad arguments or the stack did not start, 130
    interrupted (SIGINT/SIGTERM; the stack is stopped first)."""
    if args.list_kinds:
        print(_list_kinds())
        return 0
    if args.spawn and args.target:
        print("harness chaos: --spawn and --target exclude each other", file=sys.stderr)
        return 2
    try:
        options = ChaosOptions.from_args(args)
    except ValueError as exc:
        print(f"harness chaos: {exc}", file=sys.stderr)
        return 2
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    code: list[int] = []

    async def go() -> None:
        report = await run_chaos(options, reactor)
        print(report.format_text(), flush=True)
        if options.json_path:
            with open(options.json_path, "w", encoding="utf-8") as fh:
                json.dump(report.to_json(), fh, indent=2, ensure_ascii=False)
                fh.write("\n")
        code.append(report.exit_code)

    def finished(result: object) -> None:
        if isinstance(result, Failure):
            print(f"harness chaos: {result.getTraceback()}", file=sys.stderr)
            code.append(2)
        if reactor.running:
            reactor.stop()

    def start() -> None:
        defer.ensureDeferred(go()).addBoth(finished)

    reactor.callWhenRunning(start)
    reactor.run()
    return code[0] if code else 130  # the reactor stopped first: interrupted


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="harness chaos",
        description="Load + seeded random faults + invariant checks against server_core.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
