"""Anthropic Messages API checks: ``POST /v1/messages``, its stream, count_tokens, errors.

A Messages stream is named events: ``message_start``, then per content block
``content_block_start``, ``content_block_delta``..., ``content_block_stop`` (indices 0,
1, ...), then ``message_delta`` with the stop reason and ``message_stop``, its one
complete ending (``server_core.sse.dialects.MESSAGES``). ``ping`` may come anywhere.
"""

from __future__ import annotations

import json
from typing import Any

from harness.client import HTTP_ERROR, StreamResult
from harness.conformance.checks.assertions import (
    brief,
    expect_error,
    fail,
    is_int,
    require_json,
    require_sse,
)
from harness.conformance.checks.context import MESSAGES, Context
from harness.conformance.checks.dialect_streams import (
    Seen,
    event_names,
    framing_problems,
    read_frames,
    require_ending,
)
from harness.conformance.checks.registry import check
from server_core.sse.dialects import MESSAGES as DIALECT

STOP_REASONS = ("end_turn", "max_tokens", "stop_sequence", "tool_use")


def of_name(r: StreamResult, name: str) -> list[dict[str, Any]]:
    """The payloads of the stream's events called ``name`` (objects only)."""
    return [
        s.payload for s in read_frames(r, DIALECT) if s.name == name and isinstance(s.payload, dict)
    ]


async def missing_messages(ctx: Context) -> StreamResult:
    """A Messages request without ``messages``, once per run (two checks judge it)."""
    body = ctx.messages_body()
    del body["messages"]
    return await ctx.memo("messages.missing", lambda: ctx.request(MESSAGES, body))


@check(
    "messages.nonstream.shape",
    "POST /v1/messages: JSON {id, type: message, role: assistant, content: [{type: text, "
    "text}], stop_reason, usage {input_tokens, output_tokens}}",
)
async def messages_nonstream_shape(ctx: Context) -> str:
    body = require_json(await ctx.messages(stream=False))
    problems = []
    if not isinstance(body.get("id"), str) or not body["id"]:
        problems.append(f"id is {body.get('id')!r}")
    for key, want in (("type", "message"), ("role", "assistant")):
        if body.get(key) != want:
            problems.append(f"{key} is {body.get(key)!r}, not {want!r}")
    content = body.get("content")
    texts = (
        [b for b in content if isinstance(b, dict) and b.get("type") == "text"]
        if isinstance(content, list)
        else []
    )
    if not texts or not all(isinstance(b.get("text"), str) for b in texts):
        problems.append(f"content has no text block with a string text: {str(content)[:60]}")
    if body.get("stop_reason") not in STOP_REASONS:
        problems.append(f"stop_reason is {body.get('stop_reason')!r}")
    usage = body.get("usage")
    if not isinstance(usage, dict) or not all(
        is_int(usage.get(k)) for k in ("input_tokens", "output_tokens")
    ):
        problems.append(f"usage is {usage!r:.80}")
    if problems:
        raise fail("; ".join(problems[:4]))
    return f"{body['stop_reason']}, text {texts[0]['text']!r:.50}"


@check(
    "messages.stream.framing",
    "Messages stream: 200 text/event-stream; every event is data: holding a JSON object "
    "whose type equals its event: name",
)
async def messages_stream_framing(ctx: Context) -> str:
    r = await ctx.messages(stream=True)
    require_sse(r)
    problems = framing_problems(r, typed=DIALECT)
    if problems:
        raise fail("; ".join(problems[:4]))
    return f"{r.n_events} events"


@check(
    "messages.stream.message_start",
    "Messages stream: the first event is message_start with message {id, type: message, "
    "role: assistant, content: [], usage.input_tokens}",
)
async def messages_stream_message_start(ctx: Context) -> str:
    r = await ctx.messages(stream=True)
    require_sse(r)
    seen = [s for s in read_frames(r, DIALECT) if s.name != "ping"]
    if not seen or seen[0].name != "message_start":
        raise fail(f"first event is {seen[0].name if seen else None!r}, not message_start")
    msg = seen[0].payload.get("message") if isinstance(seen[0].payload, dict) else None
    if not isinstance(msg, dict):
        raise fail("message_start has no message object")
    problems = [
        f"message.{k} is {msg.get(k)!r}"
        for k, v in (("type", "message"), ("role", "assistant"), ("content", []))
        if msg.get(k) != v
    ]
    if not isinstance(msg.get("id"), str) or not msg["id"]:
        problems.append(f"message.id is {msg.get('id')!r}")
    usage = msg.get("usage")
    if not isinstance(usage, dict) or not is_int(usage.get("input_tokens")):
        problems.append(f"message.usage is {usage!r:.60}")
    if problems:
        raise fail("; ".join(problems))
    return f"id {msg['id']!r}"


def block_order_problem(seen: list[Seen]) -> str | None:
    """The first event out of the content-block order, or None (pings are ignored)."""
    open_block: int | None = None
    next_index, delta_seen = 0, False
    for s in seen:
        index = s.payload.get("index") if isinstance(s.payload, dict) else None
        where = f"event {s.index} {s.name}"
        if s.name == "content_block_start":
            if open_block is not None or delta_seen:
                return f"{where} while block {open_block} is open or after message_delta"
            if index != next_index:
                return f"{where} has index {index!r}, want {next_index}"
            open_block = index
        elif s.name in ("content_block_delta", "content_block_stop"):
            if open_block is None or index != open_block:
                return f"{where} has index {index!r}, open block {open_block}"
            if s.name == "content_block_stop":
                open_block, next_index = None, next_index + 1
        elif s.name == "message_delta":
            if open_block is not None:
                return f"{where} while block {open_block} is open"
            delta_seen = True
        elif s.name == "message_stop" and not delta_seen:
            return f"{where} before any message_delta"
    if next_index == 0:
        return "no content block"
    return None


@check(
    "messages.stream.order",
    "Messages stream: content_block_start/delta.../stop per block with indices 0, 1, ..., "
    "then message_delta, then message_stop",
)
async def messages_stream_order(ctx: Context) -> str:
    r = await ctx.messages(stream=True)
    require_sse(r)
    seen = read_frames(r, DIALECT)
    problem = block_order_problem(seen)
    if problem:
        raise fail(problem)
    deltas = of_name(r, "content_block_delta")
    text = "".join(
        str(d.get("delta", {}).get("text", "")) for d in deltas if isinstance(d.get("delta"), dict)
    )
    return f"{len(deltas)} deltas, text {text!r:.50}"


@check(
    "messages.stream.stop_reason",
    "Messages stream: exactly one message_delta, with delta.stop_reason (end_turn, "
    "max_tokens, ...) and an integer usage.output_tokens",
)
async def messages_stream_stop_reason(ctx: Context) -> str:
    r = await ctx.messages(stream=True)
    require_sse(r)
    deltas = of_name(r, "message_delta")
    if len(deltas) != 1:
        raise fail(f"{len(deltas)} message_delta events")
    delta, usage = deltas[0].get("delta"), deltas[0].get("usage")
    reason = delta.get("stop_reason") if isinstance(delta, dict) else None
    problems = [] if reason in STOP_REASONS else [f"delta.stop_reason is {reason!r}"]
    if not isinstance(usage, dict) or not is_int(usage.get("output_tokens")):
        problems.append(f"usage is {usage!r:.60}")
    if problems or not isinstance(usage, dict):
        raise fail("; ".join(problems))
    return f"{reason}, {usage['output_tokens']} output tokens"


@check(
    "messages.stream.stop_last",
    "Messages stream: exactly one message_stop, the last event; no error event; the body "
    "ends after it",
)
async def messages_stream_stop_last(ctx: Context) -> str:
    r = await ctx.messages(stream=True)
    require_sse(r)
    detail = require_ending(r, DIALECT, "message_stop")
    return f"{detail} ({' '.join(dict.fromkeys(event_names(read_frames(r, DIALECT))))})"[:100]


@check(
    "messages.count_tokens",
    "POST /v1/messages/count_tokens: 200 JSON {input_tokens: integer > 0}",
)
async def messages_count_tokens(ctx: Context) -> str:
    body = ctx.messages_body()
    del body["max_tokens"]  # not required for counting
    got = require_json(await ctx.request(MESSAGES + "/count_tokens", body))
    count = got.get("input_tokens")
    if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
        raise fail(f"input_tokens is {count!r}: {json.dumps(got)[:80]}")
    return f"{count} input tokens"


@check("messages.errors.missing_messages", "Messages without messages: 400 with an error body")
async def messages_errors_missing_messages(ctx: Context) -> str:
    return expect_error(await missing_messages(ctx), ctx.ok_statuses({400}))


@check("messages.errors.messages_type", 'Messages with messages: "hello": 400 with an error body')
async def messages_errors_messages_type(ctx: Context) -> str:
    r = await ctx.request(MESSAGES, ctx.messages_body(messages="hello"))
    return expect_error(r, ctx.ok_statuses({400}))


@check(
    "messages.errors.shape",
    'Messages error body is Anthropic-shaped: {"type": "error", "error": {"type", '
    '"message"}} (lenient: OpenAI-shaped too)',
)
async def messages_errors_shape(ctx: Context) -> str:
    r = await missing_messages(ctx)
    if r.outcome != HTTP_ERROR:
        raise fail(f"not an HTTP error: {brief(r)}")
    try:
        obj = json.loads(r.body or b"")
    except ValueError:
        raise fail(f"body is not JSON: {(r.body or b'')[:60]!r}") from None
    err = obj.get("error") if isinstance(obj, dict) else None
    if not isinstance(err, dict) or not isinstance(err.get("message"), str):
        raise fail(f"no error.message: {str(obj)[:80]}")
    if obj.get("type") == "error" and isinstance(err.get("type"), str):
        return f"{r.status} {err['type']}"
    if ctx.lenient:
        return f"{r.status} OpenAI-shaped (lenient)"
    raise fail(f'OpenAI-shaped, not {{"type": "error", "error": {{"type", ...}}}}: {str(obj)[:80]}')
