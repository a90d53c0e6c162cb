"""Stream chat checks: every chunk's shape, and the honest ending of the stream.

A stream ends exactly once: one finish_reason on the last chunk with choices, then
``data: [DONE]`` and the end of the body; an error event is never followed by ``[DONE]``.
The usage chunk, the length limit and keep-alive comments must not change that.
"""

from __future__ import annotations

from harness.client import DONE, ERROR_EVENT
from harness.conformance.checks.assertions import (
    brief,
    choice0,
    chunks_with_choices,
    deterministic_text,
    done_last,
    fail,
    finish_once,
    framing,
    is_int,
    length_limit_problems,
    require_sse,
    require_usage,
)
from harness.conformance.checks.context import LONG_PROMPT, SMALL_LIMIT, Context
from harness.conformance.checks.registry import NotApplicable, check

# Honoured only by harness's fake llama-server (directly or behind a proxy that passes
# headers on): slow tokens with comment pings in between. Other servers ignore it.
KEEPALIVE_FAULT = "token_delay=25ms,ping=5ms"


@check("chat.stream.content_type", "stream chat: 200 with Content-Type text/event-stream")
async def chat_stream_content_type(ctx: Context) -> str:
    r = await ctx.chat_stream()
    require_sse(r)
    return r.headers.get("content-type", [""])[-1]


@check(
    "chat.stream.framing",
    "stream chat: every event is a data: field holding a JSON object (or [DONE]), "
    "no non-standard fields",
)
async def chat_stream_framing(ctx: Context) -> str:
    r = await ctx.chat_stream()
    require_sse(r)
    return framing(r)


@check(
    "chat.stream.role_first",
    'stream chat: the first chunk\'s choices[0].delta has role "assistant"',
)
async def chat_stream_role_first(ctx: Context) -> str:
    r = await ctx.chat_stream()
    require_sse(r)
    if not r.chunks:
        raise fail(f"no chunks: {brief(r)}")
    c0 = choice0(r.chunks[0])
    delta = (c0 or {}).get("delta")
    role = delta.get("role") if isinstance(delta, dict) else None
    if role != "assistant":
        raise fail(f"first chunk's delta is {delta!r}")
    return "role assistant first"


@check("chat.stream.single_id", "stream chat: every chunk has the same non-empty id")
async def chat_stream_single_id(ctx: Context) -> str:
    r = await ctx.chat_stream()
    require_sse(r)
    missing = sum(1 for c in r.chunks if not isinstance(c.get("id"), str) or not c["id"])
    if missing:
        raise fail(f"{missing} of {len(r.chunks)} chunks have no id")
    if len(r.ids) != 1:
        raise fail(f"{len(r.ids)} distinct ids: {sorted(r.ids)[:3]}")
    return next(iter(r.ids))


@check("chat.stream.object", 'stream chat: every chunk has object "chat.completion.chunk"')
async def chat_stream_object(ctx: Context) -> str:
    r = await ctx.chat_stream()
    require_sse(r)
    bad = {repr(c.get("object")) for c in r.chunks if c.get("object") != "chat.completion.chunk"}
    if bad or not r.chunks:
        raise fail(f"object values {sorted(bad)}" if bad else "no chunks")
    return f"{len(r.chunks)} chunks"


@check(
    "chat.stream.created_model",
    "stream chat: every chunk has an integer created and a string model, the same in all",
)
async def chat_stream_created_model(ctx: Context) -> str:
    r = await ctx.chat_stream()
    require_sse(r)
    created = {c.get("created") for c in r.chunks if is_int(c.get("created"))}
    models = {str(c.get("model")) for c in r.chunks if isinstance(c.get("model"), str)}
    missing = sum(
        1 for c in r.chunks if not is_int(c.get("created")) or not isinstance(c.get("model"), str)
    )
    if missing or not r.chunks:
        raise fail(f"{missing} of {len(r.chunks)} chunks lack created/model")
    if len(created) != 1 or len(models) != 1:
        raise fail(f"created values {sorted(map(str, created))[:3]}, models {sorted(models)[:3]}")
    return f"model {next(iter(models))!r}"


@check(
    "chat.stream.delta_shape",
    "stream chat: every chunk with choices has choices[0].index 0 and an object delta "
    "whose content is a string or null",
)
async def chat_stream_delta_shape(ctx: Context) -> str:
    r = await ctx.chat_stream()
    require_sse(r)
    problems = []
    for i, c in enumerate(chunks_with_choices(r)):
        c0 = choice0(c)
        if c0 is None:
            problems.append(f"chunk {i}: choices[0] is not an object")
            continue
        if c0.get("index") != 0:
            problems.append(f"chunk {i}: index {c0.get('index')!r}")
        delta = c0.get("delta")
        if not isinstance(delta, dict):
            problems.append(f"chunk {i}: delta is {type(delta).__name__}")
        elif delta.get("content") is not None and not isinstance(delta["content"], str):
            problems.append(f"chunk {i}: delta.content is {type(delta['content']).__name__}")
    if problems:
        raise fail("; ".join(problems[:4]))
    return f"text {r.text[:40]!r}"


@check(
    "chat.stream.finish_reason",
    "stream chat: exactly one chunk has a finish_reason (stop or length), the last chunk "
    "with choices",
)
async def chat_stream_finish_reason(ctx: Context) -> str:
    r = await ctx.chat_stream()
    require_sse(r)
    return finish_once(r)


@check(
    "chat.stream.done_last",
    "stream chat: data: [DONE] is the last event, nothing follows it, and the body ends",
)
async def chat_stream_done_last(ctx: Context) -> str:
    r = await ctx.chat_stream()
    require_sse(r)
    return done_last(r)


@check(
    "chat.stream.no_error_event",
    "stream chat: a normal stream carries no error event (and never [DONE] after one)",
)
async def chat_stream_no_error_event(ctx: Context) -> str:
    r = await ctx.chat_stream()
    require_sse(r)
    if r.outcome == ERROR_EVENT or r.error is not None:
        extra = " followed by [DONE]" if r.done_after_error else ""
        raise fail(f"error event{extra}: {(r.error or {}).get('message')!r}")
    if r.done_after_error or r.after_error:
        raise fail("events after an error event")
    return "none"


@check(
    "chat.stream.usage",
    "stream chat with stream_options.include_usage: the last chunk before [DONE] has "
    "choices [] and a consistent usage",
)
async def chat_stream_usage(ctx: Context) -> str:
    r = await ctx.chat_stream_usage()
    require_sse(r)
    if r.outcome != DONE:
        raise fail(brief(r))
    with_usage = [i for i, c in enumerate(r.chunks) if c.get("usage") is not None]
    if not with_usage:
        raise fail("no chunk carries usage")
    last = r.chunks[-1]
    if with_usage != [len(r.chunks) - 1]:
        raise fail(f"usage on chunk(s) {with_usage} of {len(r.chunks)}, want only the last")
    if last.get("choices") != []:
        raise fail(f"usage chunk has choices {last.get('choices')!r}, want []")
    return require_usage(last.get("usage"))


@check(
    "chat.stream.no_usage_by_default",
    "stream chat without stream_options: no usage chunk and no usage object",
)
async def chat_stream_no_usage_by_default(ctx: Context) -> str:
    r = await ctx.chat_stream()
    require_sse(r)
    empty = [i for i, c in enumerate(r.chunks) if c.get("choices") == []]
    if empty:
        raise fail(f"chunk(s) {empty} have choices []")
    with_usage = [i for i, c in enumerate(r.chunks) if c.get("usage") is not None]
    if with_usage:
        raise fail(f"usage on chunk(s) {with_usage}")
    return "none"


@check(
    "chat.stream.max_tokens",
    f"stream chat with max_tokens={SMALL_LIMIT}: complete stream, finish_reason length, "
    f"completion_tokens <= {SMALL_LIMIT}",
)
async def chat_stream_max_tokens(ctx: Context) -> str:
    body = ctx.chat_body(
        messages=[{"role": "user", "content": LONG_PROMPT}],
        max_tokens=SMALL_LIMIT,
        stream=True,
        stream_options={"include_usage": True},
    )
    r = await ctx.request("/v1/chat/completions", body)
    require_sse(r)
    if r.outcome != DONE:
        raise fail(brief(r))
    problems = length_limit_problems(r.finish_reason, r.usage, SMALL_LIMIT)
    if problems:
        raise fail("; ".join(problems))
    return f"length, text {r.text!r}"


@check(
    "chat.stream.keepalive_comments",
    "stream chat with comment frames (: pings) between events still completes with [DONE] "
    "and the same text",
)
async def chat_stream_keepalive(ctx: Context) -> str:
    r = await ctx.request(
        "/v1/chat/completions",
        ctx.chat_body(stream=True),
        headers={"X-Fault": KEEPALIVE_FAULT},
    )
    require_sse(r)
    if r.outcome != DONE:
        raise fail(f"{brief(r)} after {r.comments} comments")
    plain = await ctx.chat_stream()
    if r.comments == 0:
        raise NotApplicable(
            "the server sent no comment frames during a stream, nothing to tolerate"
        )
    if plain.outcome == DONE and r.text != plain.text:
        # Only a deterministic server must repeat itself.
        first, again = await ctx.chat_nonstream(), await ctx.chat_nonstream_again()
        try:
            deterministic_text(first, again)
        except NotApplicable:
            return f"{r.comments} comments, done (server not deterministic)"
        raise fail(f"text with comments {r.text[:40]!r} != without {plain.text[:40]!r}")
    return f"{r.comments} comments, done"
