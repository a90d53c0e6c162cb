"""Collateral: failures explained by a crash or a pool race are excused, others not."""

from __future__ import annotations

from harness.chaos import RequestRecord, attribute_collateral
from harness.chaos.judge import judge
from harness.chaos.kinds import FAIL, MANAGED
from harness.chaos.plan import RequestPlan
from harness.client import StreamResult
from tests.harness.chaos.support import make_plan as _plan
from tests.harness.chaos.support import make_result as _result


def _record(plan: RequestPlan, result: StreamResult, t0: float, t1: float) -> RequestRecord:
    rec = RequestRecord(plan, plan.alias or "lane", "m", result, t0, t1)
    rec.violations = judge(plan, result, expected_model="m", deadline=100)
    return rec


def test_collateral_of_a_crash_and_of_a_pool_race() -> None:
    failed = _result("http_error", status=502, headers={}, error={"message": "gone"})
    crash = _plan("crash", route=MANAGED, alias="cm", expect=FAIL, kills_process=True)
    victim = _plan(route=MANAGED, alias="cm", index=8)
    far = _plan(route=MANAGED, alias="cm", index=9)
    closer = _plan("close", alias="a", index=10, closes_connection=True)
    raced = _plan(alias="a", index=11)
    lonely = _plan(alias="b", index=12)
    records = [
        _record(crash, _result("error_event", error={"message": "x"}), 1.0, 1.2),
        _record(victim, failed, 1.1, 1.3),
        _record(far, failed, 9.0, 9.1),
        _record(closer, _result(), 3.0, 3.1),
        _record(raced, failed, 3.12, 3.13),
        _record(lonely, failed, 3.12, 3.13),
    ]
    attribute_collateral(records)
    assert [(r.collateral, [v.code for v in r.violations]) for r in records] == [
        (None, []),
        ("crash", []),
        (None, ["unexpected_failure"]),
        (None, []),
        ("pool_race", []),
        (None, ["unexpected_failure"]),
    ]
    assert records[4].collateral_of == [10]
    strict = [_record(closer, _result(), 3.0, 3.1), _record(raced, failed, 3.12, 3.13)]
    attribute_collateral(strict, strict=True)
    assert [v.code for v in strict[1].violations] == ["unexpected_failure"]
