"""Non-stream chat checks: the ``chat.completion`` body, its finish reason, usage and
``max_tokens`` limit.
"""

from __future__ import annotations

from typing import Any

from harness.conformance.checks.assertions import (
    choice0,
    content_type,
    fail,
    is_int,
    is_json_type,
    length_limit_problems,
    require_json,
    require_usage,
)
from harness.conformance.checks.context import LONG_PROMPT, SMALL_LIMIT, Context
from harness.conformance.checks.registry import check


@check(
    "chat.nonstream.shape",
    "non-stream chat: JSON {id, object: chat.completion, created int, model, "
    "choices[0].message {role: assistant, content: str}}",
)
async def chat_nonstream_shape(ctx: Context) -> str:
    r = await ctx.chat_nonstream()
    body = require_json(r)
    problems = []
    if not is_json_type(content_type(r)):
        problems.append(f"Content-Type {content_type(r)!r} is not JSON")
    if not isinstance(body.get("id"), str) or not body["id"]:
        problems.append(f"id is {body.get('id')!r}")
    if body.get("object") != "chat.completion":
        problems.append(f"object is {body.get('object')!r}, not 'chat.completion'")
    if not is_int(body.get("created")):
        problems.append(f"created is {body.get('created')!r}, not an integer")
    if not isinstance(body.get("model"), str) or not body["model"]:
        problems.append(f"model is {body.get('model')!r}")
    c0 = choice0(body)
    if c0 is None:
        problems.append("choices[0] missing")
    else:
        if c0.get("index") != 0:
            problems.append(f"choices[0].index is {c0.get('index')!r}, not 0")
        message = c0.get("message")
        if not isinstance(message, dict):
            problems.append("choices[0].message is not an object")
        else:
            if message.get("role") != "assistant":
                problems.append(f"message.role is {message.get('role')!r}")
            if not isinstance(message.get("content"), str):
                problems.append(f"message.content is {type(message.get('content')).__name__}")
    if problems:
        raise fail("; ".join(problems))
    return f"text {r.text[:40]!r}"


@check(
    "chat.nonstream.finish_reason", "non-stream chat: choices[0].finish_reason is stop or length"
)
async def chat_nonstream_finish(ctx: Context) -> str:
    body = require_json(await ctx.chat_nonstream())
    reason = (choice0(body) or {}).get("finish_reason")
    if reason not in ("stop", "length"):
        raise fail(f"finish_reason is {reason!r}")
    return str(reason)


@check(
    "chat.nonstream.usage",
    "non-stream chat: usage {prompt_tokens, completion_tokens, total_tokens} integers, "
    "total = prompt + completion",
)
async def chat_nonstream_usage(ctx: Context) -> str:
    body = require_json(await ctx.chat_nonstream())
    return require_usage(body.get("usage"))


@check(
    "chat.max_tokens",
    f"non-stream chat with max_tokens={SMALL_LIMIT}: finish_reason length, "
    f"completion_tokens <= {SMALL_LIMIT}",
)
async def chat_max_tokens(ctx: Context) -> str:
    body = ctx.chat_body(
        messages=[{"role": "user", "content": LONG_PROMPT}], max_tokens=SMALL_LIMIT, stream=False
    )
    r = await ctx.request("/v1/chat/completions", body)
    obj = require_json(r)
    reason = (choice0(obj) or {}).get("finish_reason")
    usage: Any = obj.get("usage")
    problems = length_limit_problems(reason, usage, SMALL_LIMIT)
    if problems:
        raise fail("; ".join(problems))
    return f"length after {usage['completion_tokens']} token(s)"
