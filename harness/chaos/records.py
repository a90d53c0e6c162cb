"""What a chaos run produces: one ``RequestRecord`` per request, one ``Check`` per
after-run check. The report (``harness.chaos.report``) is made of these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.chaos.judge import Violation
from harness.chaos.plan import RequestPlan
from harness.client import StreamResult

__all__ = ["Check", "RequestRecord"]


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
    collateral: str | None = None  # why an unexpected failure was excused (see collateral)
    collateral_of: list[int] = field(default_factory=list)  # the requests that explain it

    @property
    def duration(self) -> float:
        """Seconds from sending the request to its end, as the runner measured them."""
        return self.t_end - self.t_start


@dataclass
class Check:
    """A check of the server after the run (health, fds, RSS, children)."""

    name: str
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The check as the JSON report shows it (``data`` merged in)."""
        return {"name": self.name, "ok": self.ok, "detail": self.detail, **self.data}
