"""Assertion helpers the checks share: how a response ended, body shapes, stream endings.

Each ``require_*``/``expect_*`` helper raises ``CheckFailed`` with a one-line detail;
each ``*_problems`` helper returns the list of what is wrong, so a check can report
several problems at once.
"""

from __future__ import annotations

import json
from typing import Any

from harness.client import DONE, HTTP_ERROR, StreamResult
from harness.conformance.checks.registry import CheckFailed, NotApplicable

__all__ = [
    "brief",
    "choice0",
    "chunks_with_choices",
    "content_type",
    "deterministic_text",
    "done_last",
    "error_problems",
    "expect_error",
    "fail",
    "finish_once",
    "framing",
    "is_int",
    "is_json_type",
    "length_limit_problems",
    "require_json",
    "require_sse",
    "require_usage",
    "text_of",
    "usage_problems",
]


def fail(detail: str) -> CheckFailed:
    """A ``CheckFailed`` to raise: ``raise fail(detail)`` reads as the verdict."""
    return CheckFailed(detail)


def brief(r: StreamResult) -> str:
    """One line saying how a response ended, for failure details."""
    parts = [f"outcome={r.outcome}", f"status={r.status}"]
    if r.end_reason and r.end_reason != "complete":
        parts.append(f"end={r.end_reason}")
    if r.error:
        msg = str(r.error.get("message", r.error))[:120]
        parts.append(f"error={msg!r}")
    if r.exception:
        parts.append(f"exception={r.exception[:120]}")
    return " ".join(parts)


def content_type(r: StreamResult) -> str:
    """The response's media type, lower case, without parameters."""
    raw = r.headers.get("content-type", [""])[-1]
    return raw.split(";", 1)[0].strip().lower()


def is_json_type(ctype: str) -> bool:
    """``application/json`` or a structured ``+json`` type."""
    return ctype == "application/json" or (ctype.startswith("application/") and "+json" in ctype)


def require_json(r: StreamResult) -> dict[str, Any]:
    """A complete 200 JSON object body, else fail."""
    if r.outcome != DONE or r.status != 200 or r.is_sse:
        raise fail(f"expected a 200 JSON body: {brief(r)}")
    if not isinstance(r.json_body, dict):
        raise fail(f"body is not a JSON object: {type(r.json_body).__name__}")
    return r.json_body


def require_sse(r: StreamResult) -> None:
    """A 200 event stream (however it ended), else fail."""
    if r.status != 200:
        raise fail(f"expected a 200 event stream: {brief(r)}")
    if not r.is_sse:
        raise fail(f"Content-Type is {content_type(r)!r}, not text/event-stream")


def is_int(value: Any) -> bool:
    """An int that is not a bool (JSON ``true`` is no count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def usage_problems(usage: Any) -> list[str]:
    """What is wrong with a ``usage`` object (empty list: nothing)."""
    if not isinstance(usage, dict):
        return [f"usage is {type(usage).__name__}, not an object"]
    problems = []
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    for key in keys:
        value = usage.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append(f"usage.{key} is {value!r}, not an integer >= 0")
    if not problems:
        p, c, t = (usage[k] for k in keys)
        if p + c != t:
            problems.append(f"prompt_tokens {p} + completion_tokens {c} != total_tokens {t}")
        if p == 0:
            problems.append("prompt_tokens is 0 for a non-empty prompt")
    return problems


def require_usage(usage: Any) -> str:
    """Fail unless ``usage`` is consistent; the detail is ``prompt+completion=total``."""
    problems = usage_problems(usage)
    if problems:
        raise fail("; ".join(problems))
    return f"{usage['prompt_tokens']}+{usage['completion_tokens']}={usage['total_tokens']}"


def length_limit_problems(reason: Any, usage: Any, limit: int) -> list[str]:
    """What is wrong with a reply cut at ``max_tokens=limit``: the reason, or the count."""
    problems = []
    if reason != "length":
        problems.append(f"finish_reason is {reason!r}, not 'length'")
    if usage_problems(usage):
        problems.append("no valid usage to check the limit")
    elif usage["completion_tokens"] > limit:
        problems.append(f"completion_tokens {usage['completion_tokens']} > {limit}")
    return problems


def choice0(obj: dict[str, Any]) -> dict[str, Any] | None:
    """``choices[0]`` if it is an object, else None."""
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return None


def error_problems(r: StreamResult, *, require_json_body: bool = True) -> list[str]:
    """What is wrong with an error response's body (OpenAI shape, JSON content type)."""
    problems = []
    if r.status is not None and r.status >= 500:
        problems.append(f"client input gave a server error {r.status}")
    if not require_json_body:
        return problems
    ctype = content_type(r)
    if not is_json_type(ctype):
        problems.append(f"Content-Type {ctype!r} is not JSON")
    try:
        obj = json.loads(r.body or b"")
    except ValueError:
        snippet = (r.body or b"")[:80]
        problems.append(f"body is not JSON: {snippet!r}")
        return problems
    err = obj.get("error") if isinstance(obj, dict) else None
    if not isinstance(err, dict):
        problems.append('body has no "error" object')
    elif not isinstance(err.get("message"), str) or not err["message"]:
        problems.append('"error.message" is not a non-empty string')
    return problems


def expect_error(
    r: StreamResult,
    statuses: set[int],
    *,
    code: str | None = None,
    require_json_body: bool = True,
) -> str:
    """Fail unless ``r`` is an HTTP error with a status in ``statuses`` and a good body."""
    problems = []
    if r.outcome != HTTP_ERROR or r.status not in statuses:
        want = "/".join(map(str, sorted(statuses))) if len(statuses) < 5 else "4xx"
        problems.append(f"status {r.status} (want {want}; {brief(r)})")
    if r.outcome == HTTP_ERROR:
        problems += error_problems(r, require_json_body=require_json_body)
        if code is not None and r.error is not None and r.error.get("code") != code:
            problems.append(f"error.code is {r.error.get('code')!r}, want {code!r}")
    if problems:
        raise fail("; ".join(problems))
    message = (r.error or {}).get("message", "")
    return f"{r.status}: {str(message)[:100]}"


def deterministic_text(first: StreamResult, again: StreamResult) -> str:
    """The text if two identical temperature-0 requests agree, else NotApplicable."""
    a, b = require_json(first), require_json(again)
    ta, tb = text_of(a), text_of(b)
    if ta != tb:
        raise NotApplicable(
            "the server is not deterministic at temperature 0 with a fixed seed "
            f"({ta[:40]!r} vs {tb[:40]!r})"
        )
    return ta


def text_of(body: dict[str, Any]) -> str:
    """The generated text of a non-stream chat or completion body (``''`` if none)."""
    c0 = choice0(body) or {}
    message = c0.get("message")
    content = message.get("content") if isinstance(message, dict) else c0.get("text")
    return content if isinstance(content, str) else ""


def chunks_with_choices(r: StreamResult) -> list[dict[str, Any]]:
    """The stream's chunks with a non-empty ``choices`` array (not the usage chunk)."""
    return [c for c in r.chunks if isinstance(c.get("choices"), list) and c["choices"]]


# -- stream endings and framing (chat and text completion streams alike) -----------------


def framing(r: StreamResult) -> str:
    """Fail unless every event is a ``data:`` field holding a JSON object or ``[DONE]``."""
    problems = []
    for i, ev in enumerate(r.events):
        if ev.extra:
            problems.append(f"event {i} has non-standard field(s) {[k for k, _ in ev.extra]}")
        if ev.data is None:
            problems.append(f"event {i} has no data field")
            continue
        if ev.is_done:
            continue
        try:
            obj = json.loads(ev.data)
        except ValueError:
            problems.append(f"event {i} data is not JSON: {ev.data[:60]!r}")
            continue
        if not isinstance(obj, dict):
            problems.append(f"event {i} data is not a JSON object")
    if not r.events:
        problems.append("no events")
    if problems:
        raise fail("; ".join(problems[:4]))
    return f"{r.n_events} events, {r.comments} comments"


def finish_once(r: StreamResult) -> str:
    """Fail unless only the last chunk with choices has a finish_reason, stop or length."""
    with_choices = chunks_with_choices(r)
    finishing = [
        i for i, c in enumerate(with_choices) if (choice0(c) or {}).get("finish_reason") is not None
    ]
    if len(finishing) != 1:
        raise fail(f"{len(finishing)} chunks carry a finish_reason")
    if finishing[0] != len(with_choices) - 1:
        raise fail(f"finish_reason on chunk {finishing[0]} of {len(with_choices)}, not the last")
    reason = (choice0(with_choices[finishing[0]]) or {}).get("finish_reason")
    if reason not in ("stop", "length"):
        raise fail(f"finish_reason is {reason!r}")
    return str(reason)


def done_last(r: StreamResult) -> str:
    """Fail unless ``[DONE]`` is the last event, nothing follows it, and the body ended."""
    if not any(ev.is_done for ev in r.events):
        raise fail(f"no [DONE]: {brief(r)}")
    if not r.events[-1].is_done or r.after_done:
        raise fail("something arrived after [DONE]")
    if r.end_reason not in ("complete", "closed"):
        raise fail(f"the body did not end after [DONE] (end={r.end_reason})")
    return f"[DONE] is event {r.n_events}"
