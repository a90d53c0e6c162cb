"""The judge per dialect: each stream by its own ending, its own error event, its text."""

from __future__ import annotations

import pytest

from harness.chaos.judge import VIOLATION_CODES, ending_name, judge
from harness.chaos.kinds import (
    EITHER,
    FAIL,
    MESSAGES,
    NATIVE,
    OLLAMA_CHAT,
    OLLAMA_GENERATE,
    RESPONSES,
)
from harness.chaos.plan import RequestPlan
from harness.client import StreamResult
from tests.harness.chaos.support import make_plan, make_result

ENDPOINTS = {"responses": RESPONSES, "messages": MESSAGES, "native": NATIVE}


def codes(plan: RequestPlan, result: StreamResult) -> list[str]:
    return [v.code for v in judge(plan, result, expected_model="m")]


@pytest.mark.parametrize("dialect", ["responses", "messages", "native"])
def test_the_whole_text_with_its_ending_is_honest(dialect: str) -> None:
    plan = make_plan(endpoint=ENDPOINTS[dialect])
    assert plan.dialect == dialect
    assert codes(plan, make_result(dialect=dialect)) == []


@pytest.mark.parametrize("dialect", ["responses", "messages", "native"])
def test_a_cut_stream_that_forged_its_ending(dialect: str) -> None:
    plan = make_plan(endpoint=ENDPOINTS[dialect])
    cut = make_result(dialect=dialect, text=" river")
    [found] = judge(plan, cut, expected_model="m")
    assert found.code == "done_incomplete" and ending_name(dialect) in found.detail
    fail = make_plan("reset", endpoint=ENDPOINTS[dialect], spec="reset_after=5", expect=FAIL)
    assert codes(fail, make_result(dialect=dialect)) == ["done_despite_fault"]


def test_a_stream_without_its_own_ending_is_truncated() -> None:
    # E.g. a relay that ended a Responses stream with chat's [DONE]: the client read it
    # as the Responses dialect and saw no response.completed.
    plan = make_plan(endpoint=RESPONSES)
    result = make_result("truncated", dialect="responses", end_reason="complete")
    assert codes(plan, result) == ["truncated"]


def test_responses_has_no_finish_reason_to_check() -> None:
    plan = make_plan(endpoint=RESPONSES, finish_reason="length")
    assert codes(plan, make_result(dialect="responses", finish_reason=None)) == []
    messages = make_plan(endpoint=MESSAGES, finish_reason="length")
    assert codes(messages, make_result(dialect="messages")) == ["wrong_finish"]


def test_final_event_is_an_honest_failure() -> None:
    failed = make_result("final_event", dialect="responses", final_event="response.failed")
    assert codes(make_plan(endpoint=RESPONSES, expect=FAIL), failed) == []
    assert codes(make_plan(endpoint=RESPONSES, expect=EITHER), failed) == []
    assert codes(make_plan(endpoint=RESPONSES), failed) == ["unexpected_failure"]


def test_one_error_event_only_and_nothing_after_the_ending() -> None:
    fail = make_plan("error", endpoint=MESSAGES, spec="error_after=3", expect=FAIL)
    one = make_result("error_event", dialect="messages", error={"message": "x"})
    assert codes(fail, one) == []
    two = make_result("error_event", dialect="messages", error={"message": "x"}, after_error=True)
    assert codes(fail, two) == ["after_error"]
    stop_after = make_result(
        "error_event", dialect="messages", error={"message": "x"}, done_after_error=True
    )
    [found] = judge(fail, stop_after, expected_model="m")
    assert found.code == "done_after_error" and "message_stop" in found.detail
    late = make_result(dialect="responses", after_done=True)
    [found] = judge(make_plan(endpoint=RESPONSES), late, expected_model="m")
    assert found.code == "after_done" and "response.completed" in found.detail


def test_violation_texts_name_no_single_dialect() -> None:
    for code in ("truncated", "done_despite_fault", "done_incomplete", "after_done"):
        assert "[DONE]" not in VIOLATION_CODES[code]


# -- Ollama: NDJSON lines ------------------------------------------------------------------

NDJSON = {"content-type": ["application/x-ndjson"]}


def ollama_result(outcome: str = "done", **kw: object) -> StreamResult:
    return make_result(outcome, dialect="ollama", headers=NDJSON, ids=set(), **kw)


def test_ollama_done_line_after_the_whole_text_is_honest() -> None:
    plan = make_plan(endpoint=OLLAMA_CHAT)
    assert plan.dialect == "ollama_chat"
    assert codes(plan, ollama_result()) == []
    # done_reason is the finish reason Ollama's way; it is compared.
    assert codes(plan, ollama_result(finish_reason="length")) == ["wrong_finish"]


def test_ollama_error_line_is_an_error_event_not_an_error_in_a_200() -> None:
    fail = make_plan("error", endpoint=OLLAMA_GENERATE, spec="error_after=3", expect=FAIL)
    line = ollama_result("error_event", error={"message": "upstream lost"})
    assert codes(fail, line) == []
    # The same error as a whole 200 JSON body is one.
    whole = make_result("error_event", headers={"content-type": ["application/json"]})
    assert codes(fail, whole) == ["error_in_200"]


def test_ollama_forged_done_after_a_loss_is_caught_with_its_name() -> None:
    fail = make_plan("reset", endpoint=OLLAMA_CHAT, spec="reset_after=4", expect=FAIL)
    [found] = judge(fail, ollama_result(text=" river"), expected_model="m")
    assert found.code == "done_despite_fault" and '"done": true line' in found.detail
    after = ollama_result("error_event", error={"message": "x"}, done_after_error=True)
    [found] = judge(fail, after, expected_model="m")
    assert found.code == "done_after_error" and '"done": true' in found.detail
