"""``StreamResult`` and the names of the verdict, without a network."""

from __future__ import annotations

import json

import pytest

import harness.client
from harness.client import DONE, OUTCOMES, TRUNCATED, StreamResult

# Every name other modules import from harness.client today (chaos, conformance, bench, tests).
USED_ELSEWHERE = [
    "CONNECT_ERROR",
    "DISCONNECTED",
    "DONE",
    "ERROR_EVENT",
    "HTTP_ERROR",
    "OUTCOMES",
    "TIMEOUT",
    "TRUNCATED",
    "StreamResult",
    "chat",
    "completions",
    "stream_request",
]


@pytest.mark.parametrize("name", USED_ELSEWHERE)
def test_public_names_are_reexported(name: str) -> None:
    assert name in harness.client.__all__
    assert getattr(harness.client, name) is not None


def test_outcomes_are_the_eight_strings() -> None:
    # final_event: the Responses API's honest non-success ending (response.failed/incomplete).
    assert OUTCOMES == {
        "done",
        "error_event",
        "final_event",
        "http_error",
        "truncated",
        "timeout",
        "connect_error",
        "disconnected",
    }


def test_a_fresh_result_is_truncated_with_no_timings() -> None:
    r = StreamResult()
    assert r.outcome == TRUNCATED and not r.ok
    assert r.ttfb is None and r.ttft is None and r.header_latency is None
    assert r.duration is None and r.max_gap is None
    assert not r.is_sse


def test_timings_are_relative_to_the_start() -> None:
    r = StreamResult(
        outcome=DONE,
        t_start=10.0,
        t_headers=10.5,
        t_first_byte=11.0,
        t_first_token=11.25,
        t_end=12.0,
        gaps=[0.1, 0.4, 0.2],
    )
    assert r.ok
    assert (r.header_latency, r.ttfb, r.ttft, r.duration) == (0.5, 1.0, 1.25, 2.0)
    assert r.max_gap == 0.4


@pytest.mark.parametrize(
    ("ctype", "sse"),
    [
        ("text/event-stream", True),
        ("Text/Event-Stream; charset=utf-8", True),
        ("application/json", False),
    ],
)
def test_is_sse_reads_the_last_content_type(ctype: str, sse: bool) -> None:
    assert StreamResult(headers={"content-type": ["x/y", ctype]}).is_sse is sse


def test_summary_is_json_and_keeps_only_error_code_type_message() -> None:
    r = StreamResult(
        t_start=1.0,
        t_end=1.1234567,
        error={"code": 500, "message": "m", "param": None},
        ids={"a", "b"},
    )
    summary = r.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["error"] == {"code": 500, "message": "m"}
    assert summary["ids"] == 2 and summary["duration"] == 0.123457
    assert summary["ttfb"] is None
