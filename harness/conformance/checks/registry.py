"""The check registry: results, the ``Check`` record, ``@check`` and ``select_checks``.

A check is an async function of a ``Context`` that returns a detail string (pass),
raises ``CheckFailed(detail)`` (fail) or raises ``NotApplicable(reason)`` (n/a).
``@check`` appends it to ``CHECKS``; registration order is run order, so the order in
which ``harness.conformance.checks`` imports the group modules is the order of the report.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.conformance.checks.context import Context

__all__ = [
    "CHECKS",
    "FAIL",
    "NA",
    "PASS",
    "Check",
    "CheckFailed",
    "CheckFunc",
    "NotApplicable",
    "check",
    "select_checks",
]

PASS = "pass"  # noqa: S105 (a result name, not a password)
FAIL = "fail"
NA = "n/a"


class CheckFailed(Exception):
    """The server violated what the check asserts; the message is the detail."""


class NotApplicable(Exception):
    """The check cannot judge this server (e.g. no API key given); the message says why."""


CheckFunc = Callable[["Context"], Awaitable[str]]


@dataclass(frozen=True)
class Check:
    """One registered check: its unique dotted name, what it asserts, and the function."""

    name: str
    description: str
    func: CheckFunc


CHECKS: list[Check] = []


def check(name: str, description: str) -> Callable[[CheckFunc], CheckFunc]:
    """Register ``func`` as the check ``name`` (names are unique, order is run order)."""

    def register(func: CheckFunc) -> CheckFunc:
        if any(c.name == name for c in CHECKS):
            raise ValueError(f"duplicate check name {name!r}")
        CHECKS.append(Check(name, description, func))
        return func

    return register


def select_checks(only: list[str] | None) -> list[Check]:
    """The checks named in ``only`` (exact names or group prefixes such as ``chat.stream``).

    Raises ``ValueError`` naming every pattern that matches no check.
    """
    if not only:
        return list(CHECKS)

    def matches(name: str, pattern: str) -> bool:
        return name == pattern or name.startswith(pattern.rstrip(".") + ".")

    unknown = [p for p in only if not any(matches(c.name, p) for c in CHECKS)]
    if unknown:
        raise ValueError(f"unknown check name(s): {', '.join(unknown)}")
    return [c for c in CHECKS if any(matches(c.name, p) for p in only)]
