"""The judge: honest endings pass, every dishonest or broken one has its code."""

from __future__ import annotations

from dataclasses import replace

from harness.chaos.judge import judge
from harness.chaos.kinds import FAIL
from harness.chaos.plan import RequestPlan
from harness.client import StreamResult
from tests.harness.chaos.support import make_plan as _plan
from tests.harness.chaos.support import make_result as _result


def codes(plan: RequestPlan, result: StreamResult, model: str | None = "m") -> list[str]:
    return [v.code for v in judge(plan, result, expected_model=model)]


def test_judge_honest_endings() -> None:
    assert codes(_plan(), _result()) == []
    fail = _plan("reset", spec="reset_after=3", expect=FAIL)
    assert codes(fail, _result("error_event", text=" river", error={"message": "x"})) == []
    http = _result("http_error", status=502, headers={}, error={"message": "x"}, text="")
    assert codes(fail, http) == []
    leave = _plan("disconnect", disconnect_after=2)
    assert codes(leave, _result("disconnected", text=" river")) == []
    assert codes(leave, _result()) == []  # the stream ended before the client left


def test_judge_a_cut_stream_that_looks_complete() -> None:
    # The planted bug: [DONE] after a prefix of the text.
    assert codes(_plan(), _result(text=" river")) == ["done_incomplete"]
    fail = _plan("close", spec="close_after=3", expect=FAIL)
    assert codes(fail, _result(text=" river")) == ["done_despite_fault"]
    assert codes(fail, _result()) == ["done_despite_fault"]
    # p<1: the fake may have skipped the fault; then only the whole text is honest.
    maybe = replace(fail, spec="close_after=3,p=0.5", skippable=True)
    assert codes(maybe, _result()) == []
    assert codes(maybe, _result(text=" river")) == ["done_despite_fault"]
    assert codes(_plan(), _result(text=" other words")) == ["wrong_text"]
    assert codes(_plan(), _result(finish_reason=None)) == ["wrong_finish"]


def test_judge_duplicated_event_relayed_as_is_is_honest() -> None:
    dup = _plan("duplicate", spec="duplicate_after=3", alt_text=" river café café 日本")
    assert codes(dup, _result(text=" river café café 日本")) == []
    assert codes(dup, _result()) == []  # a relay that drops the duplicate
    assert codes(dup, _result(text=" river river café 日本")) == ["wrong_text"]


def test_judge_never_after_done_or_error() -> None:
    fail = _plan("legacy_error", spec="legacy_error_after=2", expect=FAIL)
    legacy = _result("error_event", error={"message": "x"}, done_after_error=True)
    assert codes(fail, legacy) == ["done_after_error"]
    assert codes(_plan(), _result(after_done=True)) == ["after_done"]
    err = _result("error_event", error={"message": "x"}, after_error=True)
    assert codes(fail, err) == ["after_error"]
    assert codes(_plan(), _result(invalid_json=1)) == ["invalid_json"]


def test_judge_dishonest_or_broken_endings() -> None:
    assert codes(_plan(), _result("truncated", end_reason="closed")) == ["truncated"]
    assert codes(_plan(), _result("timeout", end_reason="timeout")) == ["timeout"]
    assert codes(_plan(), _result("connect_error", status=None)) == ["connect_error"]
    assert codes(_plan(), _result("disconnected")) == ["unexpected_disconnect"]
    html = _result("http_error", status=500, headers={"content-type": ["text/html"]})
    assert codes(_plan(expect=FAIL), html) == ["bad_error_body"]
    json_200 = _result("error_event", headers={"content-type": ["application/json"]})
    assert codes(_plan(expect=FAIL), replace(json_200, error={"message": "x"})) == ["error_in_200"]
    failed = _result("http_error", status=502, headers={}, error={"message": "gone"})
    assert codes(_plan(), failed) == ["unexpected_failure"]


def test_judge_model_ids_and_deadline() -> None:
    assert codes(_plan(), _result(model="other")) == ["wrong_model"]
    assert codes(_plan(), _result(model="other"), model=None) == []
    assert codes(_plan(), _result(ids={"a", "b"})) == ["multiple_ids"]
    assert codes(_plan(deadline=0.4), _result(t_end=0.5)) == ["late"]
    assert codes(_plan(deadline=0.6), _result(t_end=0.5)) == []
