"""Ollama generation checks: ``/api/chat`` and ``/api/generate`` (whole and NDJSON
streams, judged by the ``OLLAMA`` dialect of ``harness.client``) and ``/api/embed``.

Each generation check is registered twice, once per route (``ollama.chat.*``,
``ollama.generate.*``): the two differ only in where the text is (``message.content``
or ``response``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from harness.client import NDJSON, OLLAMA, StreamResult
from harness.conformance.checks.assertions import brief, content_type, fail
from harness.conformance.checks.context import Context
from harness.conformance.checks.dialect_streams import framing_problems, require_ending
from harness.conformance.checks.ollama import (
    count,
    expect_ollama_error,
    ollama_request,
    require_object,
    show,
)
from harness.conformance.checks.registry import CheckFailed, NotApplicable, check

__all__ = ["in_lines", "line_problems", "require_ndjson", "timing_problems"]

DONE_REASONS = ("stop", "length")
# Ollama's done line always has these (a generation takes time and makes a token); the
# others it leaves out when they are zero (Go's omitempty: a warm model, a cached prompt).
TIMINGS = ("total_duration", "eval_count", "eval_duration")
PROMPT_TIMINGS = ("load_duration", "prompt_eval_count", "prompt_eval_duration")
DONE_LINE = '"done": true'


def require_ndjson(r: StreamResult) -> None:
    """A 200 ``application/x-ndjson`` stream (however it ended), else fail."""
    if r.status != 200:
        raise fail(f"expected a 200 NDJSON stream: {brief(r)}")
    if content_type(r) != NDJSON:
        raise fail(f"Content-Type is {content_type(r)!r}, not {NDJSON}")


def text_problems(obj: dict[str, Any], kind: str, where: str) -> list[str]:
    """What is wrong with the text holder of one object: chat's ``message``, generate's
    ``response``."""
    if kind == "generate":
        text = obj.get("response")
        return [] if isinstance(text, str) else [f"{where} response is {text!r:.40}"]
    msg = obj.get("message")
    if not isinstance(msg, dict):
        return [f"{where} message is {msg!r:.40}"]
    problems = [] if msg.get("role") == "assistant" else [f"{where} role is {msg.get('role')!r}"]
    if not isinstance(msg.get("content"), str):
        problems.append(f"{where} message.content is {msg.get('content')!r:.40}")
    return problems


def line_problems(obj: Any, kind: str, where: str) -> list[str]:
    """What is wrong with one line (or a whole answer): model, created_at, done, text."""
    if not isinstance(obj, dict):
        return [f"{where} is not an object"]
    problems = [
        f"{where} {key} is {obj.get(key)!r:.40}"
        for key in ("model", "created_at")
        if not isinstance(obj.get(key), str)
    ]
    if not isinstance(obj.get("done"), bool):
        problems.append(f"{where} done is {obj.get('done')!r}, not a boolean")
    return problems + text_problems(obj, kind, where)


def timing_problems(obj: dict[str, Any]) -> list[str]:
    """What is wrong with a done line's ``done_reason`` and its counts and durations."""
    problems = []
    if obj.get("done_reason") not in DONE_REASONS:
        problems.append(f"done_reason is {obj.get('done_reason')!r}")
    for key in TIMINGS + PROMPT_TIMINGS:
        value = count(obj.get(key))
        if (key in TIMINGS or key in obj) and (value is None or value < 0):
            problems.append(f"{key} is {obj.get(key)!r}, not an integer >= 0")
    if not problems and obj["total_duration"] < obj["eval_duration"]:
        problems.append(f"total_duration {obj['total_duration']} < eval_duration")
    return problems


def in_lines(detail: str) -> str:
    """A detail of the SSE helpers in an NDJSON stream's words (lines, no event names)."""
    return detail.replace(" (last ?)", "").replace("event", "line")


def _whole_check(kind: str) -> Callable[[Context], Awaitable[str]]:
    async def run(ctx: Context) -> str:
        body = require_object(await ollama_request(ctx, kind, stream=False))
        problems = line_problems(body, kind, "answer")
        if body.get("done") is not True:
            problems.append(f"done is {body.get('done')!r}")
        problems += timing_problems(body)
        if problems:
            raise fail("; ".join(problems[:4]))
        text = body["message"]["content"] if kind == "chat" else body["response"]
        return f"{body['done_reason']}, text {text!r:.50}"

    return run


def _framing_check(kind: str) -> Callable[[Context], Awaitable[str]]:
    async def run(ctx: Context) -> str:
        r = await ollama_request(ctx, kind, stream=True)
        require_ndjson(r)
        problems = framing_problems(r)
        if not problems:
            objs = [OLLAMA.read(ev)[1] for ev in r.events]
            for i, obj in enumerate(objs):
                if isinstance(obj, dict) and "error" in obj:
                    continue  # judged by done_last
                problems += line_problems(obj, kind, f"line {i}")
                if i < len(objs) - 1 and isinstance(obj, dict) and obj.get("done") is not False:
                    problems.append(f"line {i} of {len(objs)} has done {obj.get('done')!r}")
        if problems:
            raise fail("; ".join(problems[:4]))
        return f"{r.n_events} lines"

    return run


def _done_last_check(kind: str) -> Callable[[Context], Awaitable[str]]:
    async def run(ctx: Context) -> str:
        r = await ollama_request(ctx, kind, stream=True)
        require_ndjson(r)
        try:
            return in_lines(require_ending(r, OLLAMA, DONE_LINE))
        except CheckFailed as failed:
            raise fail(in_lines(str(failed))) from None

    return run


def _timings_check(kind: str) -> Callable[[Context], Awaitable[str]]:
    async def run(ctx: Context) -> str:
        r = await ollama_request(ctx, kind, stream=True)
        require_ndjson(r)
        last = OLLAMA.read(r.events[-1])[1] if r.events else None
        if not isinstance(last, dict) or last.get("done") is not True:
            raise fail(f"the last line is not a done line: {str(last)[:80]} ({brief(r)})")
        problems = timing_problems(last)
        if problems:
            raise fail("; ".join(problems[:4]))
        return f"{last['done_reason']}, {last['eval_count']} tokens in {last['total_duration']} ns"

    return run


def _matches_check(kind: str) -> Callable[[Context], Awaitable[str]]:
    async def run(ctx: Context) -> str:
        whole = await ollama_request(ctx, kind, stream=False)
        r = await ollama_request(ctx, kind, stream=True)
        if not whole.ok or not r.ok:
            raise fail(f"not both complete: whole {brief(whole)}; stream {brief(r)}")
        if (r.text, r.finish_reason) == (whole.text, whole.finish_reason):
            return f"same text ({len(r.text)} characters) and done_reason {r.finish_reason}"
        again = await ollama_request(ctx, kind, stream=False, again=True)
        if (again.text, again.finish_reason) != (whole.text, whole.finish_reason):
            raise NotApplicable("two whole answers to one request differ: nondeterministic")
        raise fail(
            f"stream {r.text!r:.40} ({r.finish_reason}) != whole {whole.text!r:.40} "
            f"({whole.finish_reason})"
        )

    return run


for _kind, _path in (("chat", "/api/chat"), ("generate", "/api/generate")):
    _text = "message {role: assistant, content}" if _kind == "chat" else "response"
    check(
        f"ollama.{_kind}.nonstream",
        f'POST {_path} with "stream": false: 200 JSON {{model, created_at, {_text}, done: '
        "true, done_reason, timing fields}",
    )(_whole_check(_kind))
    check(
        f"ollama.{_kind}.stream.framing",
        f"{_path} stream: 200 application/x-ndjson; every line a JSON object with model, "
        f"created_at, {_text} and a boolean done, false on all but the last",
    )(_framing_check(_kind))
    check(
        f"ollama.{_kind}.stream.done_last",
        f'{_path} stream: exactly one "done": true line, the last; no error line; the body '
        "ends after it",
    )(_done_last_check(_kind))
    check(
        f"ollama.{_kind}.stream.timings",
        f"{_path} stream: the done line has done_reason stop|length and integer "
        "total_duration, eval_count, eval_duration (load_duration, prompt_eval_* when sent)",
    )(_timings_check(_kind))
    check(
        f"ollama.{_kind}.stream_matches_nonstream",
        f"{_path}: the stream's text and done_reason equal the whole answer's at temperature "
        "0 with a seed (n/a when the server is nondeterministic)",
    )(_matches_check(_kind))


@check(
    "ollama.embed",
    "POST /api/embed with two inputs: {model, embeddings: two equally long lists of numbers} "
    '(n/a when the model has no embedding capability and refuses with {"error"})',
)
async def ollama_embed(ctx: Context) -> str:
    body = {"model": ctx.model, "input": ["hello", "world"]}
    r = await ctx.memo("ollama.embed", lambda: ctx.request("/api/embed", body))
    if r.status != 200:
        shown = (await show(ctx)).json_body
        caps = shown.get("capabilities") if isinstance(shown, dict) else None
        if isinstance(caps, list) and "embedding" not in caps:
            refusal = expect_ollama_error(r, set(range(400, 600)))  # still Ollama's shape
            raise NotApplicable(f"the model does not embed: {refusal}")
    got = require_object(r)
    vectors: Any = got.get("embeddings")
    ok = (
        isinstance(vectors, list)
        and len(vectors) == 2
        and all(isinstance(v, list) and v for v in vectors)
        and len(vectors[0]) == len(vectors[1])
        and all(isinstance(x, (int, float)) for v in vectors for x in v)
    )
    if not ok or not isinstance(got.get("model"), str):
        raise fail(f"embeddings is not two equal lists of numbers: {str(got)[:80]}")
    return f"2 vectors of {len(vectors[0])}"
