"""Run the conformance checks against one target and collect a ``Report``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred

from harness.client import CONNECT_ERROR, TIMEOUT, TRUNCATED
from harness.conformance.checks import (
    FAIL,
    NA,
    PASS,
    Check,
    CheckFailed,
    Context,
    NotApplicable,
    brief,
    select_checks,
)

__all__ = [
    "CheckResult",
    "Report",
    "TargetUnreachable",
    "run_checks",
    "run_conformance",
]


# Outcomes meaning "no HTTP server answered at all", when no status line arrived.
UNREACHABLE_OUTCOMES = frozenset({CONNECT_ERROR, TIMEOUT})


class TargetUnreachable(Exception):
    """No HTTP server answered at the target (refused, no response, timeout)."""


@dataclass
class CheckResult:
    """What one check concluded: its result (PASS, FAIL or NA), detail and duration."""

    name: str
    description: str
    result: str  # PASS, FAIL or NA
    detail: str
    duration: float = 0.0

    @property
    def passed(self) -> bool:
        return self.result == PASS

    @property
    def failed(self) -> bool:
        return self.result == FAIL


@dataclass
class Report:
    """Every check's result against one target, with table and JSON renderings."""

    target: str
    model: str
    lenient: bool = False
    results: list[CheckResult] = field(default_factory=list)
    started: float = 0.0  # Unix time
    duration: float = 0.0

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.result == FAIL]

    @property
    def passed(self) -> list[CheckResult]:
        return [r for r in self.results if r.result == PASS]

    @property
    def not_applicable(self) -> list[CheckResult]:
        return [r for r in self.results if r.result == NA]

    @property
    def ok(self) -> bool:
        """True when no check failed (n/a results do not count against it)."""
        return not self.failed

    def result(self, name: str) -> CheckResult:
        """The result of the check ``name``; ``KeyError`` if it did not run."""
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    def counts(self) -> dict[str, int]:
        """How many checks passed, failed, were n/a, and ran in all."""
        return {
            PASS: len(self.passed),
            FAIL: len(self.failed),
            NA: len(self.not_applicable),
            "total": len(self.results),
        }

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data: the shape of ``--json`` (docs/conformance.md)."""
        return {
            "target": self.target,
            "model": self.model,
            "strictness": "lenient" if self.lenient else "strict",
            "started": round(self.started, 3),
            "duration": round(self.duration, 3),
            "ok": self.ok,
            "summary": self.counts(),
            "checks": [{**asdict(r), "duration": round(r.duration, 4)} for r in self.results],
        }

    def to_json(self) -> str:
        """``to_dict()`` as indented JSON, non-ASCII kept as is."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def format_table(self, *, width: int = 100) -> str:
        """A plain-text table: check | result | detail (detail cut at ``width``)."""
        rows = [("check", "result", "detail")]
        for r in self.results:
            detail = " ".join(r.detail.split())
            if len(detail) > width:
                detail = detail[: width - 3] + "..."
            rows.append((r.name, r.result, detail))
        w0 = max(len(row[0]) for row in rows)
        w1 = max(len(row[1]) for row in rows)
        lines = [f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows]
        lines.insert(1, f"{'-' * w0}  {'-' * w1}  {'-' * 6}")
        c = self.counts()
        lines.append("")
        lines.append(
            f"{c[PASS]} passed, {c[FAIL]} failed, {c[NA]} n/a of {c['total']} checks "
            f"({'lenient' if self.lenient else 'strict'}) against {self.target} "
            f"model {self.model!r} in {self.duration:.2f}s"
        )
        return "\n".join(lines)


Progress = Callable[[int, int, CheckResult], None]


async def run_one(ctx: Context, chk: Check, now: Callable[[], float]) -> CheckResult:
    """Run one check; any exception it raises becomes its result, never escapes."""
    t0 = now()
    try:
        detail = await chk.func(ctx)
        result = PASS
    except CheckFailed as exc:
        result, detail = FAIL, str(exc)
    except NotApplicable as exc:
        result, detail = NA, str(exc)
    except Exception as exc:
        # A bug in a check (or a shape no check foresaw) must not end the run.
        result, detail = FAIL, f"check crashed: {type(exc).__name__}: {exc}"
    return CheckResult(chk.name, chk.description, result, detail, now() - t0)


async def probe(ctx: Context) -> None:
    """Raise ``TargetUnreachable`` unless some HTTP server answers ``GET /v1/models``."""
    r = await ctx.models()
    no_answer = r.outcome in UNREACHABLE_OUTCOMES and r.status is None
    if no_answer or (r.outcome == TRUNCATED and r.status is None):
        raise TargetUnreachable(f"{ctx.base_url}: no HTTP answer ({brief(r)})")


async def run_checks(
    target: str,
    model: str,
    *,
    api_key: str | None = None,
    reactor: Any = None,
    timeout: float = 30.0,
    only: list[str] | None = None,
    lenient: bool = False,
    progress: Progress | None = None,
) -> Report:
    """Coroutine version of ``run_conformance`` (same arguments)."""
    checks = select_checks(only)  # ValueError for unknown names, before any request
    ctx = Context(target, model, api_key=api_key, reactor=reactor, timeout=timeout, lenient=lenient)
    now = reactor.seconds if reactor is not None else time.monotonic
    report = Report(ctx.base_url, model, lenient, started=time.time())
    t0 = now()
    await probe(ctx)
    for i, chk in enumerate(checks):
        res = await run_one(ctx, chk, now)
        report.results.append(res)
        if progress is not None:
            progress(i + 1, len(checks), res)
    report.duration = now() - t0
    return report


def run_conformance(
    target: str,
    model: str,
    api_key: str | None = None,
    reactor: Any = None,
    *,
    timeout: float = 30.0,
    only: list[str] | None = None,
    lenient: bool = False,
    progress: Progress | None = None,
) -> Deferred[Report]:
    """Run the checks against ``target`` (base URL, with or without ``/v1``).

    Fires with a ``Report`` (failed checks are results, not errors); errbacks with
    ``TargetUnreachable`` when no HTTP server answers, ``ValueError`` for unknown
    names in ``only``. ``progress(done, total, result)`` is called after each check.
    """
    return ensureDeferred(
        run_checks(
            target,
            model,
            api_key=api_key,
            reactor=reactor,
            timeout=timeout,
            only=only,
            lenient=lenient,
            progress=progress,
        )
    )
