"""Differential mode: run every check against a target and a reference, report what differs.

A proxy in front of llama-server should answer like llama-server, except where it means
to differ (server_core fixes several of llama-server's error statuses). Running the same
checks against both and comparing results, not details, finds every place where the
proxy changes behaviour; ``allow`` names the accepted ones, so only new differences fail.

```python
diff = await run_differential(proxy_url, upstream_url, "my-model", allow={"errors.invalid_json"})
assert diff.ok, diff.format_table()
```
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred

from harness.conformance.checks import select_checks
from harness.conformance.runner import Progress, Report, run_checks

__all__ = [
    "CheckDiff",
    "DiffReport",
    "read_allow_file",
    "run_differential",
    "run_differential_checks",
]


@dataclass(frozen=True)
class CheckDiff:
    """One check whose result differs between target and reference."""

    name: str
    target_result: str
    target_detail: str
    reference_result: str
    reference_detail: str
    allowed: bool  # declared as a documented difference

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "allowed": self.allowed,
            "target": {"result": self.target_result, "detail": self.target_detail},
            "reference": {"result": self.reference_result, "detail": self.reference_detail},
        }


@dataclass
class DiffReport:
    """Both runs and every difference between them."""

    target: Report
    reference: Report
    allow: frozenset[str] = frozenset()
    diffs: list[CheckDiff] = field(default_factory=list)

    @property
    def unexpected(self) -> list[CheckDiff]:
        """The differences nobody declared: these make the run fail."""
        return [d for d in self.diffs if not d.allowed]

    @property
    def allowed(self) -> list[CheckDiff]:
        return [d for d in self.diffs if d.allowed]

    @property
    def stale_allowances(self) -> list[str]:
        """Checks declared as differing that gave the same result on both (now fixed?)."""
        differing = {d.name for d in self.diffs}
        ran = {r.name for r in self.target.results}
        return sorted(n for n in ran if n in self.allow and n not in differing)

    @property
    def ok(self) -> bool:
        """True when every difference is an allowed one."""
        return not self.unexpected

    def to_dict(self) -> dict[str, Any]:
        """Plain data: the shape of ``--json`` in differential mode (docs/conformance.md)."""
        return {
            "ok": self.ok,
            "target": self.target.target,
            "reference": self.reference.target,
            "summary": {
                "checks": len(self.target.results),
                "differ": len(self.diffs),
                "unexpected": len(self.unexpected),
                "allowed": len(self.allowed),
            },
            "differences": [d.to_dict() for d in self.diffs],
            "stale_allowances": self.stale_allowances,
            "target_report": self.target.to_dict(),
            "reference_report": self.reference.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def format_table(self, *, width: int = 100) -> str:
        """One block per difference (both results and details), then a summary line."""
        lines = []
        for d in self.diffs:
            mark = "allowed" if d.allowed else "DIFFERS"
            lines.append(f"{mark:<7}  {d.name}")
            for side, result, detail in (
                ("target", d.target_result, d.target_detail),
                ("reference", d.reference_result, d.reference_detail),
            ):
                text = " ".join(detail.split())
                if len(text) > width:
                    text = text[: width - 3] + "..."
                lines.append(f"  {side:<9}  {result:<4}  {text}".rstrip())
        for name in self.stale_allowances:
            lines.append(f"same     {name}  (allowed to differ, but did not)")
        if lines:
            lines.append("")
        lines.append(
            f"{len(self.unexpected)} unexpected and {len(self.allowed)} allowed difference(s) "
            f"in {len(self.target.results)} checks: target {self.target.target} vs "
            f"reference {self.reference.target}"
        )
        return "\n".join(lines)


def compare(target: Report, reference: Report, allow: Iterable[str] = ()) -> DiffReport:
    """The differences between two reports of the same checks (results, not details)."""
    allowed = frozenset(allow)
    by_name = {r.name: r for r in reference.results}
    diffs = []
    for t in target.results:
        ref = by_name.get(t.name)
        if ref is None or ref.result == t.result:
            continue
        diffs.append(
            CheckDiff(t.name, t.result, t.detail, ref.result, ref.detail, t.name in allowed)
        )
    return DiffReport(target, reference, allowed, diffs)


def expand_allow(allow: Iterable[str]) -> frozenset[str]:
    """Check names for ``allow`` patterns (exact names or group prefixes, as ``only``)."""
    patterns = [p for p in allow if p]
    if not patterns:
        return frozenset()
    return frozenset(c.name for c in select_checks(patterns))  # ValueError for unknown


def read_allow_file(path: str | Path) -> list[str]:
    """Check names from a file: one per line, the rest of the line (after a space) and
    ``#`` lines are comments, so each accepted difference can say why."""
    names = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line.split()[0])
    return names


async def run_differential_checks(
    target: str,
    reference: str,
    model: str,
    *,
    reference_model: str | None = None,
    api_key: str | None = None,
    reference_api_key: str | None = None,
    allow: Iterable[str] = (),
    reactor: Any = None,
    timeout: float = 30.0,
    only: list[str] | None = None,
    lenient: bool = False,
    progress: Progress | None = None,
) -> DiffReport:
    """Coroutine version of ``run_differential`` (same arguments)."""
    allowed = expand_allow(allow)  # ValueError before any request
    runs: list[Report] = []
    for url, name, key in (
        (target, model, api_key),
        (reference, reference_model or model, reference_api_key),
    ):
        runs.append(
            await run_checks(
                url,
                name,
                api_key=key,
                reactor=reactor,
                timeout=timeout,
                only=only,
                lenient=lenient,
                progress=_counting_on(progress, len(runs)),
            )
        )
    return compare(runs[0], runs[1], allowed)


def _counting_on(progress: Progress | None, runs_before: int) -> Progress | None:
    """``progress`` counting both runs as one: ``(done, total)`` over twice the checks."""
    if progress is None:
        return None
    report = progress

    def counted(done: int, total: int, res: Any) -> None:
        report(done + runs_before * total, 2 * total, res)

    return counted


def run_differential(
    target: str,
    reference: str,
    model: str,
    *,
    reference_model: str | None = None,
    api_key: str | None = None,
    reference_api_key: str | None = None,
    allow: Iterable[str] = (),
    reactor: Any = None,
    timeout: float = 30.0,
    only: list[str] | None = None,
    lenient: bool = False,
    progress: Progress | None = None,
) -> Deferred[DiffReport]:
    """Run the checks against ``target``, then ``reference``; fire with a ``DiffReport``.

    ``allow``: check names or group prefixes whose difference is accepted. Errbacks with
    ``TargetUnreachable`` when either does not answer, ``ValueError`` for unknown names
    in ``only`` or ``allow``. ``progress(done, total, result)`` is called for each check
    of both runs, counted as one (``total`` is twice the number of checks).
    """
    return ensureDeferred(
        run_differential_checks(
            target,
            reference,
            model,
            reference_model=reference_model,
            api_key=api_key,
            reference_api_key=reference_api_key,
            allow=allow,
            reactor=reactor,
            timeout=timeout,
            only=only,
            lenient=lenient,
            progress=progress,
        )
    )
