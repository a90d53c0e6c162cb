"""OpenAI Responses API checks: ``POST /v1/responses``, non-stream, stream and errors.

A Responses stream is named events (``event: response.created`` ... ``event:
response.completed``) without ``[DONE]``; ``response.completed`` is its one complete
ending (``server_core.sse.dialects.RESPONSES``) and carries the whole response with its
usage. Invalid input is an HTTP 4xx before the first byte, never a 200 stream.
"""

from __future__ import annotations

import itertools
from typing import Any

from harness.client import StreamResult
from harness.conformance.checks.assertions import (
    expect_error,
    fail,
    is_int,
    require_json,
    require_sse,
)
from harness.conformance.checks.context import RESPONSES, Context
from harness.conformance.checks.dialect_streams import (
    event_names,
    framing_problems,
    read_frames,
    require_ending,
)
from harness.conformance.checks.registry import check
from server_core.sse.dialects import RESPONSES as DIALECT

# The events of one text message, in the order they must come; other events (reasoning,
# tool calls) are not ranked. Output items count only when they are the message.
STAGES = {
    "response.created": 0,
    "response.in_progress": 1,
    "response.output_item.added": 2,
    "response.content_part.added": 3,
    "response.output_text.delta": 4,
    "response.output_text.done": 5,
    "response.content_part.done": 6,
    "response.output_item.done": 7,
    "response.completed": 8,
}


def output_text(response: dict[str, Any]) -> str | None:
    """The text of a response object's message items (None if it has no output list)."""
    output = response.get("output")
    if not isinstance(output, list):
        return None
    parts = []
    for item in output:
        if not isinstance(item, dict) or item.get("type") != "message":
            continue
        for part in item.get("content") or []:
            if isinstance(part, dict) and part.get("type") == "output_text":
                parts.append(str(part.get("text", "")))
    return "".join(parts)


def usage_problems(usage: Any) -> list[str]:
    """What is wrong with a Responses ``usage`` (input/output/total tokens)."""
    if not isinstance(usage, dict):
        return [f"usage is {type(usage).__name__}, not an object"]
    keys = ("input_tokens", "output_tokens", "total_tokens")
    problems = [f"usage.{k} is {usage.get(k)!r}" for k in keys if not is_int(usage.get(k))]
    if not problems:
        i, o, t = (usage[k] for k in keys)
        if i + o != t:
            problems.append(f"input_tokens {i} + output_tokens {o} != total_tokens {t}")
        if i <= 0:
            problems.append("input_tokens is 0 for a non-empty input")
    return problems


def completed_response(r: StreamResult) -> dict[str, Any]:
    """The ``response`` object of the stream's ``response.completed`` event, else fail."""
    for s in read_frames(r, DIALECT):
        if s.name == "response.completed" and isinstance(s.payload, dict):
            response = s.payload.get("response")
            if isinstance(response, dict):
                return response
            raise fail("response.completed carries no response object")
    raise fail(f"no response.completed event among {event_names(read_frames(r, DIALECT))[-4:]}")


@check(
    "responses.nonstream.shape",
    "POST /v1/responses: JSON {id, object: response, status: completed, output: [message "
    "with output_text], usage}",
)
async def responses_nonstream_shape(ctx: Context) -> str:
    body = require_json(await ctx.responses(stream=False))
    problems = []
    if not isinstance(body.get("id"), str) or not body["id"]:
        problems.append(f"id is {body.get('id')!r}")
    if body.get("object") != "response":
        problems.append(f"object is {body.get('object')!r}, not 'response'")
    if body.get("status") != "completed":
        problems.append(f"status is {body.get('status')!r}, not 'completed'")
    text = output_text(body)
    if text is None:
        problems.append("output is not an array")
    elif not any(isinstance(i, dict) and i.get("type") == "message" for i in body["output"]):
        problems.append("output has no message item")
    problems += usage_problems(body.get("usage"))
    if problems:
        raise fail("; ".join(problems[:4]))
    return f"text {text!r:.50}"


@check(
    "responses.stream.framing",
    "Responses stream: 200 text/event-stream; every event is data: holding a JSON object "
    "whose type equals its event: name",
)
async def responses_stream_framing(ctx: Context) -> str:
    r = await ctx.responses(stream=True)
    require_sse(r)
    problems = framing_problems(r, typed=DIALECT)
    if problems:
        raise fail("; ".join(problems[:4]))
    return f"{r.n_events} events"


@check(
    "responses.stream.order",
    "Responses stream: response.created first, then output_item.added, content_part.added, "
    "output_text.delta..., output_text.done, content_part.done, output_item.done, "
    "response.completed",
)
async def responses_stream_order(ctx: Context) -> str:
    r = await ctx.responses(stream=True)
    require_sse(r)
    seen = read_frames(r, DIALECT)
    names = event_names(seen)
    if not names or names[0] != "response.created":
        raise fail(f"first event is {names[0] if names else None!r}, not response.created")
    ranked = []
    for s in seen:
        item = s.payload.get("item") if isinstance(s.payload, dict) else None
        if s.name in ("response.output_item.added", "response.output_item.done"):
            if not isinstance(item, dict) or item.get("type") != "message":
                continue  # a reasoning or tool-call item: its own order, not judged here
        if s.name in STAGES:
            ranked.append((s.index, s.name))
    for (_, before), (i, after) in itertools.pairwise(ranked):
        if STAGES[after] < STAGES[before]:
            raise fail(f"event {i} {after} comes after {before}")
    missing = [n for n in STAGES if n != "response.in_progress" and n not in names]
    if missing:
        raise fail(f"missing {', '.join(missing)}")
    return " ".join(n.removeprefix("response.") for n in dict.fromkeys(names))[:100]


@check(
    "responses.stream.text",
    "Responses stream: the output_text.delta texts concatenate to output_text.done's text "
    "and to response.completed's output text",
)
async def responses_stream_text(ctx: Context) -> str:
    r = await ctx.responses(stream=True)
    require_sse(r)
    seen = read_frames(r, DIALECT)
    deltas = [s.payload for s in seen if s.name == "response.output_text.delta"]
    bad = [d for d in deltas if not isinstance(d, dict) or not isinstance(d.get("delta"), str)]
    if bad:
        raise fail(f"{len(bad)} output_text.delta events without a string delta")
    streamed = "".join(d["delta"] for d in deltas)
    done = [s.payload.get("text") for s in seen if s.name == "response.output_text.done"]
    if done and done[-1] != streamed:
        raise fail(f"deltas {streamed[:40]!r} != output_text.done {str(done[-1])[:40]!r}")
    final = output_text(completed_response(r))
    if final != streamed:
        raise fail(f"deltas {streamed[:40]!r} != response.completed text {str(final)[:40]!r}")
    return f"{len(deltas)} deltas, text {streamed!r:.50}"


@check(
    "responses.stream.usage",
    "Responses stream: response.completed's response has a consistent usage "
    "(input + output = total tokens)",
)
async def responses_stream_usage(ctx: Context) -> str:
    r = await ctx.responses(stream=True)
    require_sse(r)
    usage = completed_response(r).get("usage")
    problems = usage_problems(usage)
    if problems or not isinstance(usage, dict):
        raise fail("; ".join(problems))
    return f"{usage['input_tokens']}+{usage['output_tokens']}={usage['total_tokens']}"


@check(
    "responses.stream.completed_last",
    "Responses stream: exactly one response.completed, the last event; no error event; "
    "the body ends after it",
)
async def responses_stream_completed_last(ctx: Context) -> str:
    r = await ctx.responses(stream=True)
    require_sse(r)
    return require_ending(r, DIALECT, "response.completed")


@check("responses.errors.missing_input", "Responses without input: 400 with an OpenAI error body")
async def responses_errors_missing_input(ctx: Context) -> str:
    body = ctx.responses_body()
    del body["input"]
    return expect_error(await ctx.request(RESPONSES, body), ctx.ok_statuses({400}))


@check("responses.errors.input_type", "Responses with input: 5: 400 with an OpenAI error body")
async def responses_errors_input_type(ctx: Context) -> str:
    r = await ctx.request(RESPONSES, ctx.responses_body(input=5))
    return expect_error(r, ctx.ok_statuses({400}))


@check(
    "responses.errors.stream_before_first_byte",
    "Responses stream without input: an HTTP 400 with an OpenAI error body, not a 200 stream",
)
async def responses_errors_stream_before_first_byte(ctx: Context) -> str:
    body = ctx.responses_body(stream=True)
    del body["input"]
    return expect_error(await ctx.request(RESPONSES, body), ctx.ok_statuses({400}))
