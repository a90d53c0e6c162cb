"""The chaos runner's judge: is the end of one response honest for its plan?

Pure code. ``judge(plan, result, expected_model=...)`` returns the violations of one
``StreamResult`` (an empty list = honest). The rules, in the words of the architecture's
invariants:

* every response ends exactly once, in one honest way: ``done`` (``[DONE]`` after the
  whole stream / a whole JSON body), ``http_error`` (a status >= 400 with a JSON error
  body, before any byte of the body), or ``error_event`` (one SSE error event after the
  headers). ``truncated``, ``timeout`` and ``connect_error`` are never honest;
* ``done`` only when the whole text arrived: it equals the fake's deterministic text for
  the request, with its ``finish_reason``. For ``duplicate_after`` a relay that passes the
  upstream's events through as they are shows one token twice; that text is accepted
  (so is the plain text, from a relay that drops the duplicate);
* a fault that must end the response (reset, close, error, stall, crash, hang, status, a
  netfault reset/timeout, ...) makes ``done`` a violation, unless the SPEC had ``p<1``
  and the text is whole (the fake skipped the fault);
* nothing after ``[DONE]``, no ``[DONE]`` after an error, no event after an error, no
  invalid JSON event, one stream id, the model of the alias that was asked for;
* the response ended before its deadline (fault delays + margin).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.chaos.kinds import EITHER, EMBEDDINGS, FAIL, SUCCEED
from harness.chaos.plan import RequestPlan
from harness.client import (
    CONNECT_ERROR,
    DISCONNECTED,
    DONE,
    ERROR_EVENT,
    HTTP_ERROR,
    TIMEOUT,
    TRUNCATED,
    StreamResult,
)

__all__ = ["VIOLATION_CODES", "Violation", "judge"]

# Every violation code, with what it means (the report prints these).
VIOLATION_CODES: dict[str, str] = {
    "truncated": "the response ended without [DONE], without an error event or HTTP error",
    "timeout": "the response had not ended at the client's timeout (deadline + grace)",
    "connect_error": "the server refused the connection",
    "late": "the response ended after its deadline",
    "done_despite_fault": "[DONE] although the fault must have ended the response",
    "done_incomplete": "[DONE] after a prefix of the text: a cut stream looked complete",
    "wrong_text": "[DONE] with a text that is not the one the upstream generated",
    "wrong_finish": "[DONE] with a finish_reason other than the upstream's",
    "wrong_embedding": "an embeddings answer without the upstream's vectors",
    "wrong_model": "the model field is not the one of the alias asked for",
    "multiple_ids": "more than one completion id in one stream",
    "after_done": "data after [DONE]",
    "done_after_error": "[DONE] after an error event",
    "after_error": "another data event after an error event",
    "invalid_json": "a data event that is not a JSON object reached the client",
    "error_in_200": "a non-stream 2xx answer whose JSON body is an error",
    "bad_error_status": "an HTTP error with a status below 400",
    "bad_error_body": "an HTTP error without a JSON error object (e.g. an HTML page)",
    "error_without_object": "an SSE error event without an error object",
    "unexpected_failure": "a request whose faults cannot make it fail ended with an error",
    "unexpected_disconnect": "outcome `disconnected` although the client never left",
}


@dataclass(frozen=True)
class Violation:
    """One broken rule: ``code`` (a key of VIOLATION_CODES) and what was seen."""

    code: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        """The violation as the JSON report shows it."""
        return {"code": self.code, "detail": self.detail}


# Adds one violation: (code, detail).
_Report = Callable[[str, str], None]


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def judge(
    plan: RequestPlan,
    result: StreamResult,
    *,
    expected_model: str | None,
    deadline: float | None = None,
) -> list[Violation]:
    """Violations of one response (``[]`` when it ended honestly for its plan).

    ``expected_model`` is the ``model`` every chunk/body must carry (None: not checked);
    ``deadline`` defaults to ``plan.deadline`` (seconds from the request's start).
    """
    out: list[Violation] = []

    def v(code: str, detail: str) -> None:
        out.append(Violation(code, detail))

    deadline = plan.deadline if deadline is None else deadline
    _judge_ending(plan, result, deadline, v)
    _judge_never_seen(result, expected_model, v)
    duration = result.duration
    if result.outcome != TIMEOUT and duration is not None and duration > deadline:
        v("late", f"ended after {duration:.2f} s, deadline {deadline:.2f} s")
    return out


def _judge_ending(plan: RequestPlan, result: StreamResult, deadline: float, v: _Report) -> None:
    """How it ended: one honest ending, or which dishonest one."""
    outcome = result.outcome
    if outcome == TRUNCATED:
        v("truncated", f"end_reason={result.end_reason} {result.exception or ''}".strip())
    elif outcome == TIMEOUT:
        v("timeout", f"still open after {deadline:.2f} s + grace ({result.end_reason})")
    elif outcome == CONNECT_ERROR:
        v("connect_error", result.exception or "no connection")
    elif outcome == DISCONNECTED and plan.disconnect_after is None:
        v("unexpected_disconnect", f"end_reason={result.end_reason}")
    elif outcome == DONE:
        _judge_done(plan, result, v)
    elif outcome == HTTP_ERROR:
        if result.status is not None and result.status < 400:
            v("bad_error_status", f"status {result.status}")
        if not isinstance(result.error, dict):
            v("bad_error_body", f"status {result.status}, body not a JSON error object")
        _judge_failure(plan, result, v)
    elif outcome == ERROR_EVENT:
        if not result.is_sse:
            v("error_in_200", f"status {result.status} with an error JSON body")
        elif not isinstance(result.error, dict) or not result.error:
            v("error_without_object", "the error event carries no error object")
        _judge_failure(plan, result, v)


def _judge_never_seen(result: StreamResult, expected_model: str | None, v: _Report) -> None:
    """What must never be seen, whatever the ending."""
    if result.after_done:
        v("after_done", "bytes arrived after data: [DONE]")
    if result.done_after_error:
        v("done_after_error", "data: [DONE] followed an error event")
    if result.after_error:
        v("after_error", "a data event followed an error event")
    if result.invalid_json:
        v("invalid_json", f"{result.invalid_json} data event(s) not a JSON object")
    if len(result.ids) > 1:
        v("multiple_ids", f"{len(result.ids)} ids: {sorted(result.ids)[:3]}")
    if expected_model is not None and result.model is not None:
        if result.model != expected_model:
            v("wrong_model", f"model {result.model!r}, expected {expected_model!r}")


def _judge_done(plan: RequestPlan, result: StreamResult, v: _Report) -> None:
    if plan.endpoint == EMBEDDINGS:
        _judge_embeddings(plan, result, v)
        return
    text = result.text
    whole = text == plan.text or (plan.alt_text is not None and text == plan.alt_text)
    if plan.expect == FAIL and not (plan.skippable and whole):
        what = "the whole text" if whole else f"{len(text)} of {len(plan.text)} characters"
        v("done_despite_fault", f"[DONE] with {what} despite {plan.spec or plan.kind}")
        return
    if whole:
        if result.finish_reason != plan.finish_reason:
            v(
                "wrong_finish",
                f"finish_reason {result.finish_reason!r}, expected {plan.finish_reason!r}",
            )
        return
    if plan.text.startswith(text):
        v("done_incomplete", f"[DONE] after {len(text)} of {len(plan.text)} characters")
    else:
        v("wrong_text", f"got {_short(text)!r}, expected {_short(plan.text)!r}")


def _judge_embeddings(plan: RequestPlan, result: StreamResult, v: _Report) -> None:
    """A 2xx embeddings answer: only when no fault had to end it, with every vector of
    the fake in order (an error object in a 200 is ``error_in_200`` already)."""
    if plan.expect == FAIL and not plan.skippable:
        v("done_despite_fault", f"a 2xx embeddings answer despite {plan.spec or plan.kind}")
        return
    body = result.json_body if isinstance(result.json_body, dict) else {}
    data = body.get("data")
    rows = data if isinstance(data, list) else []
    got = [d.get("embedding") for d in rows if isinstance(d, dict)]
    if len(got) != len(plan.vectors):
        v("wrong_embedding", f"{len(got)} vector(s), expected {len(plan.vectors)}")
        return
    for i, (vec, want) in enumerate(zip(got, plan.vectors, strict=True)):
        if not isinstance(vec, list) or len(vec) != len(want):
            v("wrong_embedding", f"vector {i} is not {len(want)} floats")
            return
        if any(
            not isinstance(a, (int, float)) or abs(a - b) > 1e-6
            for a, b in zip(vec, want, strict=True)
        ):
            v("wrong_embedding", f"vector {i} differs from the upstream's")
            return


def _judge_failure(plan: RequestPlan, result: StreamResult, v: _Report) -> None:
    """An honest error: fine for FAIL/EITHER plans; for SUCCEED plans a failure the
    request's own faults cannot explain (the runner may excuse it: collateral)."""
    if plan.expect in (FAIL, EITHER):
        return
    assert plan.expect == SUCCEED
    err = result.error or {}
    message = err.get("message") if isinstance(err, dict) else None
    v(
        "unexpected_failure",
        f"{result.outcome} status={result.status}: {_short(str(message or err), 120)}",
    )
