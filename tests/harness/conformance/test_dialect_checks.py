"""The Responses, Messages and native checks accept a right answer and reject each wrong one.

A scripted server (``planted_dialects``) answers correctly in mode ``ok`` and plants one
violation per other mode; the checks named for the mode must fail, all others pass.
"""

from __future__ import annotations

import pytest
import pytest_twisted

from harness.conformance import FAIL, PASS, run_conformance
from tests.harness.conformance.planted_dialects import MODES, planted_dialects
from tests.harness.conformance.support import names, reactor, table

NEW_GROUPS = ["responses", "messages", "native"]


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest_twisted.ensureDeferred
async def test_planted_violation_fails_exactly_its_checks(mode: str) -> None:
    async with planted_dialects(mode) as url:
        # A short timeout: one mode keeps a stream open after its last event.
        report = await run_conformance(url, "planted", reactor=reactor, only=NEW_GROUPS, timeout=1)
    assert names(report, FAIL) == MODES[mode], table(report)
    assert len(report.passed) == len(report.results) - len(MODES[mode]), table(report)


@pytest.mark.parametrize(
    ("mode", "check", "detail"),
    [
        (
            "resp_after_completed",
            "responses.stream.completed_last",
            "then 1 more (last response.audit)",
        ),
        ("resp_no_completed", "responses.stream.completed_last", "no response.completed in"),
        ("resp_failed", "responses.stream.completed_last", "(response.failed) is final"),
        ("resp_text_mismatch", "responses.stream.text", "!= response.completed text"),
        ("resp_order", "responses.stream.order", "response.output_item.added comes after"),
        ("resp_bad_usage", "responses.stream.usage", "!= total_tokens 9"),
        ("resp_name_mismatch", "responses.stream.framing", "event: 'progress' but type"),
        ("resp_200_errors", "responses.errors.missing_input", "status 200 (want 400"),
        ("msg_after_stop", "messages.stream.stop_last", "then 1 more (last ping)"),
        ("msg_error_event", "messages.stream.stop_last", "(error) is error"),
        ("msg_no_stop_reason", "messages.stream.stop_reason", "delta.stop_reason is None"),
        ("msg_bad_index", "messages.stream.order", "has index 1, open block 0"),
        ("msg_start_not_first", "messages.stream.message_start", "not message_start"),
        ("msg_openai_errors", "messages.errors.shape", "OpenAI-shaped"),
        ("msg_500_errors", "messages.errors.missing_messages", "server error 500"),
        ("native_after_stop", "native.stream.stop_last", "then 1 more"),
        ("native_no_stop", "native.stream.stop_last", 'no "stop": true'),
        ("native_hang", "native.stream.stop_last", "did not end after"),
        ("native_not_json", "native.stream.framing", "not a JSON object"),
        ("native_roundtrip", "native.tokenize_roundtrip", "/detokenize gave"),
        ("native_template", "native.apply_template", "does not contain the message"),
        ("native_info", "native.health", "status=503"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_failure_detail_says_what_is_wrong(mode: str, check: str, detail: str) -> None:
    async with planted_dialects(mode) as url:
        report = await run_conformance(url, "planted", reactor=reactor, only=[check], timeout=1)
    assert detail in report.result(check).detail, table(report)


@pytest_twisted.ensureDeferred
async def test_right_answers_pass_with_informative_details() -> None:
    async with planted_dialects("ok") as url:
        report = await run_conformance(url, "planted", reactor=reactor, only=NEW_GROUPS, timeout=5)
    assert names(report, PASS) == {r.name for r in report.results}, table(report)
    assert "3 deltas, text 'Hello there friend'" in report.result("responses.stream.text").detail
    assert report.result("responses.stream.usage").detail == "5+3=8"
    assert report.result("messages.errors.shape").detail == "400 invalid_request_error"
    assert report.result("messages.stream.stop_reason").detail == "end_turn, 3 output tokens"
    # A ping between blocks is allowed, and the stream still ends with message_stop.
    assert "message_stop is event" in report.result("messages.stream.stop_last").detail


@pytest_twisted.ensureDeferred
async def test_lenient_accepts_an_openai_shaped_messages_error() -> None:
    async with planted_dialects("msg_openai_errors") as url:
        report = await run_conformance(
            url, "planted", reactor=reactor, only=["messages.errors"], lenient=True
        )
    assert names(report, PASS) == {r.name for r in report.results}, table(report)
    assert "OpenAI-shaped (lenient)" in report.result("messages.errors.shape").detail
