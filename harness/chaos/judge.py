"""The chaos runner's judge: is the end of one response honest for its plan?

Pure code. ``judge(plan, result, expected_model=...)`` returns the violations of one
``StreamResult`` (an empty list = honest). The rules, in the words of the architecture's
invariants:

* every response ends exactly once, in one honest way: ``done`` (the complete ending of
  its stream dialect after the whole stream: ``[DONE]`` for chat and completions,
  ``response.completed``, ``message_stop``, native's ``"stop": true``; or a whole JSON
  body; Ollama's ``"done": true`` line), ``http_error`` (a status >= 400 with a JSON
  error body, before any byte of the body), ``error_event`` (one SSE error event of the
  dialect after the headers; Ollama's one ``{"error": ...}`` line) or
  ``final_event`` (``response.failed``/``response.incomplete``: honest, but a failure).
  ``truncated`` (no complete ending, no error event), ``timeout`` and ``connect_error``
  are never honest. The client reads each stream by the dialect of its path;
* ``done`` only when the whole text arrived: it equals the fake's deterministic text for
  the request, with its ``finish_reason`` (not for Responses: llama-server's stream has
  none). For ``duplicate_after`` a relay that passes the
  upstream's events through as they are shows one token twice; that text is accepted
  (so is the plain text, from a relay that drops the duplicate);
* a fault that must end the response (reset, close, error, stall, crash, hang, status, a
  netfault reset/timeout, ...) makes ``done`` a violation, unless the SPEC had ``p<1``
  and the text is whole (the fake skipped the fault);
* nothing after the complete ending, no complete ending after an error, no event after
  an error (so exactly one error event), no invalid JSON event, one stream id, the
  model of the alias that was asked for;
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
    FINAL_EVENT,
    HTTP_ERROR,
    TIMEOUT,
    TRUNCATED,
    StreamResult,
)

__all__ = ["VIOLATION_CODES", "Violation", "ending_name", "judge"]

# Every violation code, with what it means (the report prints these).
VIOLATION_CODES: dict[str, str] = {
    "truncated": "the stream ended without its dialect's complete ending, error event or "
    "HTTP error",
    "timeout": "the response had not ended at the client's timeout (deadline + grace)",
    "connect_error": "the server refused the connection",
    "late": "the response ended after its deadline",
    "done_despite_fault": "a complete ending although the fault must have ended the response",
    "done_incomplete": "a complete ending after a prefix of the text: a cut stream looked complete",
    "wrong_text": "a complete ending with a text that is not the one the upstream generated",
    "wrong_finish": "a complete ending with a finish_reason other than the upstream's",
    "wrong_embedding": "an embeddings answer without the upstream's vectors",
    "wrong_model": "the model field is not the one of the alias asked for",
    "multiple_ids": "more than one completion id in one stream",
    "after_done": "data after the complete ending",
    "done_after_error": "a complete ending after an error event",
    "after_error": "another event after an error event (more than one error event)",
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
    elif outcome == FINAL_EVENT:
        _judge_failure(plan, result, v)
    elif outcome == ERROR_EVENT:
        if not result.is_stream:
            v("error_in_200", f"status {result.status} with an error JSON body")
        elif not isinstance(result.error, dict) or not result.error:
            v("error_without_object", "the error event carries no error object")
        _judge_failure(plan, result, v)


def _judge_never_seen(result: StreamResult, expected_model: str | None, v: _Report) -> None:
    """What must never be seen, whatever the ending."""
    ending = ending_name(result.dialect)
    if result.after_done:
        v("after_done", f"bytes arrived after {ending}")
    if result.done_after_error:
        v("done_after_error", f"{ending} followed an error event")
    if result.after_error:
        v("after_error", "another event followed an error event")
    if result.invalid_json:
        v("invalid_json", f"{result.invalid_json} data event(s) not a JSON object")
    if len(result.ids) > 1:
        v("multiple_ids", f"{len(result.ids)} ids: {sorted(result.ids)[:3]}")
    if expected_model is not None and result.model is not None:
        if result.model != expected_model:
            v("wrong_model", f"model {result.model!r}, expected {expected_model!r}")


def ending_name(dialect: str) -> str:
    """How the complete ending of a stream dialect is called in a violation's detail."""
    return _ENDINGS.get(dialect, "[DONE]")


_ENDINGS = {
    "chat": "data: [DONE]",
    "responses": "response.completed",
    "messages": "message_stop",
    "native": 'the "stop": true event',
    "ollama": 'a "done": true line',
}


def _judge_done(plan: RequestPlan, result: StreamResult, v: _Report) -> None:
    if plan.endpoint == EMBEDDINGS:
        _judge_embeddings(plan, result, v)
        return
    text = result.text
    whole = text == plan.text or (plan.alt_text is not None and text == plan.alt_text)
    ending = ending_name(result.dialect) if plan.stream else "a 2xx answer"
    if plan.expect == FAIL and not (plan.skippable and whole):
        what = "the whole text" if whole else f"{len(text)} of {len(plan.text)} characters"
        v("done_despite_fault", f"{ending} with {what} despite {plan.spec or plan.kind}")
        return
    if whole:
        if plan.dialect != "responses" and result.finish_reason != plan.finish_reason:
            v(
                "wrong_finish",
                f"finish_reason {result.finish_reason!r}, expected {plan.finish_reason!r}",
            )
        return
    if plan.text.startswith(text):
        v("done_incomplete", f"{ending} after {len(text)} of {len(plan.text)} characters")
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
