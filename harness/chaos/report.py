"""``ChaosReport``: the result of a chaos run, as JSON and as the human report.

The report holds the records and the after-run checks; it counts outcomes per fault
kind (``kind_table``) and per request dialect (``dialect_table``), and gives every
violation the command that replays exactly that request (``ChaosOptions.reproduce_argv``).
Exit status: 0 no violation, 1 violations, 2 the stack did not start.
"""

from __future__ import annotations

import shlex
from collections import Counter
from dataclasses import dataclass
from typing import Any

from harness.chaos.judge import Violation
from harness.chaos.kinds import DIALECT_NAMES, KINDS
from harness.chaos.options import ChaosOptions
from harness.chaos.records import Check, RequestRecord
from harness.client import (
    CONNECT_ERROR,
    DISCONNECTED,
    DONE,
    ERROR_EVENT,
    FINAL_EVENT,
    HTTP_ERROR,
    TIMEOUT,
    TRUNCATED,
)

__all__ = ["OUTCOME_COLUMNS", "ChaosReport"]

OUTCOME_COLUMNS = (
    DONE,
    HTTP_ERROR,
    ERROR_EVENT,
    FINAL_EVENT,
    DISCONNECTED,
    TRUNCATED,
    TIMEOUT,
    CONNECT_ERROR,
)
# Column heads of the text table, one per outcome.
_SHORT = {
    DONE: "done",
    HTTP_ERROR: "http_err",
    ERROR_EVENT: "err_event",
    FINAL_EVENT: "final",
    DISCONNECTED: "disconn",
    TRUNCATED: "trunc",
    TIMEOUT: "timeout",
    CONNECT_ERROR: "conn_err",
}


@dataclass
class ChaosReport:
    """A finished run: its options, every request, the after-run checks, timings."""

    options: ChaosOptions
    records: list[RequestRecord]
    checks: list[Check]
    started: float
    elapsed: float
    setup_error: str | None = None

    @property
    def request_violations(self) -> list[tuple[RequestRecord, Violation]]:
        """Every violation of every request, in request order."""
        return [(r, v) for r in self.records for v in r.violations]

    @property
    def failed_checks(self) -> list[Check]:
        """The after-run checks that failed."""
        return [c for c in self.checks if not c.ok]

    @property
    def n_violations(self) -> int:
        """Request violations plus failed checks."""
        return len(self.request_violations) + len(self.failed_checks)

    @property
    def ok(self) -> bool:
        """The stack started and nothing was violated."""
        return self.setup_error is None and self.n_violations == 0

    @property
    def exit_code(self) -> int:
        """0 no violation, 1 violations, 2 the stack did not start."""
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

    def dialect_table(self) -> dict[str, dict[str, Any]]:
        """Per request dialect (``chat``, ..., ``native``, ``embeddings``): requests,
        outcome counts, violations, collateral."""
        table: dict[str, dict[str, Any]] = {}
        names = [*DIALECT_NAMES, *sorted({r.plan.dialect for r in self.records})]
        for name in dict.fromkeys(names):
            recs = [r for r in self.records if r.plan.dialect == name]
            if not recs:
                continue
            outcomes = Counter(r.result.outcome for r in recs)
            table[name] = {
                "requests": len(recs),
                "outcomes": {o: outcomes.get(o, 0) for o in OUTCOME_COLUMNS},
                "violations": sum(len(r.violations) for r in recs),
                "requests_with_violations": sum(1 for r in recs if r.violations),
                "collateral": sum(1 for r in recs if r.collateral),
            }
        return table

    def to_json(self) -> dict[str, Any]:
        """The JSON report (``--json``): counts, violations, collateral, every record."""
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
            "dialects": self.dialect_table(),
            "violation_counts": dict(sorted(by_code.items())),
            "collateral_counts": dict(sorted(reasons.items())),
            "violations": [_violation_json(opts, r, v) for r, v in self.request_violations],
            "collateral": [_collateral_json(r, t_first) for r in self.records if r.collateral],
            "checks": [c.to_json() for c in self.checks],
            "records": [_record_json(r, t_first) for r in self.records],
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(opts).items()},
        }

    def format_text(self) -> str:
        """The human report: the per-kind table, the checks, every violation."""
        opts = self.options
        mode = "spawn" if opts.spawn else f"target {opts.target} model {opts.model}"
        rate = len(self.records) / self.elapsed if self.elapsed else 0.0
        lines = [
            f"chaos: seed {opts.seed}, {len(self.records)} requests, concurrency "
            f"{opts.concurrency}, {mode}: {self.elapsed:.1f} s ({rate:.1f} req/s)"
        ]
        if self.setup_error:
            lines.append(f"SETUP FAILED: {self.setup_error}")
        lines += _table_lines(self.kind_table())
        lines += _dialect_lines(self.dialect_table())
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
        lines += _violation_lines(opts, self.request_violations)
        lines.append("")
        if self.ok:
            lines.append("OK: no violation")
        else:
            lines.append(f"FAILED: {self.n_violations} violation(s)")
        return "\n".join(lines)


def _violation_json(opts: ChaosOptions, r: RequestRecord, v: Violation) -> dict[str, Any]:
    return {
        "index": r.plan.index,
        "code": v.code,
        "detail": v.detail,
        "kind": r.plan.kind,
        "dialect": r.plan.dialect,
        "plan": r.plan.describe(),
        "alias": r.alias,
        "spec": r.plan.spec,
        "result": r.result.summary(),
        "reproduce": shlex.join(opts.reproduce_argv(r.plan.index)),
        "reproduce_argv": opts.reproduce_argv(r.plan.index),
    }


def _collateral_json(r: RequestRecord, t_first: float) -> dict[str, Any]:
    return {
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


def _record_json(r: RequestRecord, t_first: float) -> dict[str, Any]:
    return {
        "index": r.plan.index,
        "kind": r.plan.kind,
        "dialect": r.plan.dialect,
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


def _table_lines(table: dict[str, dict[str, Any]]) -> list[str]:
    """The per-kind table with a total row."""
    head = (
        f"{'kind':<15}{'reqs':>6}"
        + "".join(f"{_SHORT[o]:>10}" for o in OUTCOME_COLUMNS)
        + f"{'collat':>8}{'viol':>6}{'p50 s':>8}{'max s':>8}"
    )
    lines = ["", head, "-" * len(head)]
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
    return lines


def _dialect_lines(table: dict[str, dict[str, Any]]) -> list[str]:
    """The per-dialect table: the same requests as the kind table, by request dialect."""
    head = (
        f"{'dialect':<15}{'reqs':>6}"
        + "".join(f"{_SHORT[o]:>10}" for o in OUTCOME_COLUMNS)
        + f"{'collat':>8}{'viol':>6}"
    )
    lines = ["", head, "-" * len(head)]
    for name, row in table.items():
        lines.append(
            f"{name:<15}{row['requests']:>6}"
            + "".join(f"{row['outcomes'][o]:>10}" for o in OUTCOME_COLUMNS)
            + f"{row['collateral']:>8}{row['violations']:>6}"
        )
    return lines


def _violation_lines(opts: ChaosOptions, viols: list[tuple[RequestRecord, Violation]]) -> list[str]:
    """Every request violation with its plan and its reproduce command."""
    if not viols:
        return []
    lines = ["", f"{len(viols)} request violation(s):"]
    for r, v in viols:
        lines.append(f"  #{r.plan.index} {v.code}: {v.detail}")
        lines.append(f"      {r.plan.describe()} -> {r.alias}")
        lines.append(f"      reproduce: {shlex.join(opts.reproduce_argv(r.plan.index))}")
    return lines
