"""PlanSettings: a run enables only the fault kinds it can end or reach."""

from __future__ import annotations

from dataclasses import replace

from harness.chaos.kinds import NET_KINDS
from harness.chaos.plan import PlanSettings


def test_target_mode_leaves_out_what_it_cannot_end_or_reach() -> None:
    target = PlanSettings(aliases=("m",))
    kinds = set(target.enabled_kinds())
    assert not kinds & ({"stall", "hang", "crash"} | NET_KINDS)
    assert {"reset", "close", "error", "legacy_error", "disconnect"} <= kinds
    with_timeouts = replace(target, idle_timeout=2.0, header_timeout=3.0)
    assert {"stall", "hang"} <= set(with_timeouts.enabled_kinds())
