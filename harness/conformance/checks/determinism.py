"""Determinism checks: the same temperature-0 seeded request gives the same text twice,
streamed or not (n/a on a server that is not deterministic).
"""

from __future__ import annotations

from harness.client import DONE
from harness.conformance.checks.assertions import (
    brief,
    choice0,
    deterministic_text,
    fail,
    require_json,
    require_sse,
)
from harness.conformance.checks.context import Context
from harness.conformance.checks.registry import check


@check(
    "chat.deterministic",
    "the same non-stream request twice at temperature 0 with a seed gives the same text "
    "(n/a when the server is nondeterministic)",
)
async def chat_deterministic(ctx: Context) -> str:
    text = deterministic_text(await ctx.chat_nonstream(), await ctx.chat_nonstream_again())
    return f"same text {text[:40]!r}"


@check(
    "chat.stream_matches_nonstream",
    "stream and non-stream give the same text and finish_reason at temperature 0 with a seed "
    "(n/a when the server is nondeterministic)",
)
async def chat_stream_matches_nonstream(ctx: Context) -> str:
    text = deterministic_text(await ctx.chat_nonstream(), await ctx.chat_nonstream_again())
    r = await ctx.chat_stream()
    require_sse(r)
    if r.outcome != DONE:
        raise fail(brief(r))
    if r.text != text:
        raise fail(f"stream {r.text[:50]!r} != non-stream {text[:50]!r}")
    reason = (choice0(require_json(await ctx.chat_nonstream())) or {}).get("finish_reason")
    if r.finish_reason != reason:
        raise fail(f"finish_reason stream {r.finish_reason!r} != non-stream {reason!r}")
    return f"{len(text)} chars equal"
