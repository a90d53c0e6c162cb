"""Robustness checks: multi-turn and content-part messages, a large prompt, multi-byte
UTF-8, concurrent streams, and a client that leaves mid-stream.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import DeferredList, ensureDeferred

from harness.client import DISCONNECTED, DONE, StreamResult
from harness.conformance.checks.assertions import brief, fail, framing, require_sse
from harness.conformance.checks.context import LONG_PROMPT, PROMPT, Context
from harness.conformance.checks.registry import check

UNICODE_PROMPT = (
    "Répète: héllo wörld — naïve café, 日本語のテキスト, 한국어, Ελληνικά, עברית, "
    "emoji 🚀🧪👩‍💻, combining e\u0301, math ∮ E⋅da = Q, \U0001d518\U0001d52b\U0001d526."
)
LARGE_PROMPT_WORDS = 512  # well within any context window worth testing (>= 1k tokens)
CONCURRENT = 4


async def expect_done_stream(ctx: Context, body: dict[str, Any]) -> StreamResult:
    """The stream chat for ``body``, failing unless it completes with good framing."""
    r = await ctx.request("/v1/chat/completions", body)
    require_sse(r)
    if r.outcome != DONE:
        raise fail(brief(r))
    framing(r)
    return r


@check(
    "chat.multi_turn",
    "stream chat with system, user, assistant and user messages completes",
)
async def chat_multi_turn(ctx: Context) -> str:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": PROMPT},
    ]
    r = await expect_done_stream(ctx, ctx.chat_body(messages=messages, stream=True))
    return f"text {r.text[:40]!r}"


@check(
    "chat.content_parts",
    'stream chat whose message content is an array of {"type": "text"} parts completes',
)
async def chat_content_parts(ctx: Context) -> str:
    parts = [{"type": "text", "text": "Say hello"}, {"type": "text", "text": "in a few words."}]
    body = ctx.chat_body(messages=[{"role": "user", "content": parts}], stream=True)
    r = await expect_done_stream(ctx, body)
    return f"text {r.text[:40]!r}"


@check(
    "robust.large_prompt",
    f"stream chat with a {LARGE_PROMPT_WORDS}-word prompt (within any context) completes",
)
async def robust_large_prompt(ctx: Context) -> str:
    words = " ".join(f"word{i % 97}" for i in range(LARGE_PROMPT_WORDS))
    prompt = f"Repeat the last word of this list: {words}"
    body = ctx.chat_body(messages=[{"role": "user", "content": prompt}], max_tokens=8, stream=True)
    await expect_done_stream(ctx, body)
    return f"{len(prompt)} chars accepted"


@check(
    "robust.unicode",
    "stream chat with multi-byte UTF-8 (accents, CJK, emoji, combining marks) completes; "
    "the reply decodes without replacement characters",
)
async def robust_unicode(ctx: Context) -> str:
    body = ctx.chat_body(messages=[{"role": "user", "content": UNICODE_PROMPT}], stream=True)
    r = await expect_done_stream(ctx, body)
    if "\ufffd" in r.text:
        raise fail(f"replacement character in the reply: {r.text[:60]!r}")
    nonascii = sum(1 for ch in r.text if ord(ch) > 127)
    return f"done, {nonascii} non-ASCII characters in the reply"


@check(
    "robust.concurrent",
    f"{CONCURRENT} concurrent stream chats all complete, each with its own single id",
)
async def robust_concurrent(ctx: Context) -> str:
    bodies = [
        ctx.chat_body(messages=[{"role": "user", "content": f"{PROMPT} ({i})"}], stream=True)
        for i in range(CONCURRENT)
    ]
    runs = [ensureDeferred(ctx.request("/v1/chat/completions", b)) for b in bodies]
    results = await DeferredList(runs, consumeErrors=True)
    problems = []
    ids: list[str] = []
    for i, (ok, value) in enumerate(results):
        if not ok:
            failure: Any = value
            problems.append(f"#{i}: {failure.getErrorMessage()}")
            continue
        r: StreamResult = value
        if r.outcome != DONE:
            problems.append(f"#{i}: {brief(r)}")
        elif len(r.ids) != 1:
            problems.append(f"#{i}: {len(r.ids)} ids")
        else:
            ids.extend(r.ids)
    if not problems and len(set(ids)) != len(ids):
        problems.append(f"streams share ids: {ids}")
    if problems:
        raise fail("; ".join(problems))
    return f"{CONCURRENT} streams done"


@check(
    "robust.disconnect_recovery",
    "a client that leaves mid-stream does not break the server: the next stream completes",
)
async def robust_disconnect_recovery(ctx: Context) -> str:
    body = ctx.chat_body(
        messages=[{"role": "user", "content": LONG_PROMPT}], max_tokens=64, stream=True
    )
    first = await ctx.request("/v1/chat/completions", body, disconnect_after=2)
    if first.outcome not in (DISCONNECTED, DONE):
        raise fail(f"the stream to leave did not run: {brief(first)}")
    left = "left after 2 events" if first.outcome == DISCONNECTED else "stream ended first"
    after = await ctx.request("/v1/chat/completions", ctx.chat_body(stream=True))
    if after.outcome != DONE:
        raise fail(f"{left}; the next stream: {brief(after)}")
    return f"{left}; next stream done"
