"""Text completion checks: ``POST /v1/completions``, non-stream and stream."""

from __future__ import annotations

from typing import Any

from harness.conformance.checks.assertions import (
    choice0,
    chunks_with_choices,
    done_last,
    fail,
    finish_once,
    framing,
    is_int,
    require_json,
    require_sse,
    usage_problems,
)
from harness.conformance.checks.context import MAX_TOKENS, PROMPT, SEED, Context
from harness.conformance.checks.registry import check


def completion_body(ctx: Context, **extra: Any) -> dict[str, Any]:
    """The standard text completion body (the chat prompt as ``prompt``) plus ``extra``."""
    body: dict[str, Any] = {
        "model": ctx.model,
        "prompt": PROMPT,
        "temperature": 0,
        "seed": SEED,
        "max_tokens": MAX_TOKENS,
    }
    body.update(extra)
    return body


def completion_chunk_problems(obj: dict[str, Any], where: str) -> list[str]:
    """What is wrong with a ``text_completion`` body or chunk (``where`` names it)."""
    problems = []
    if obj.get("object") != "text_completion":
        problems.append(f"{where}: object {obj.get('object')!r}, not 'text_completion'")
    if not isinstance(obj.get("id"), str) or not obj["id"]:
        problems.append(f"{where}: id {obj.get('id')!r}")
    if not is_int(obj.get("created")):
        problems.append(f"{where}: created {obj.get('created')!r}")
    if not isinstance(obj.get("model"), str):
        problems.append(f"{where}: model {obj.get('model')!r}")
    c0 = choice0(obj)
    if c0 is None:
        problems.append(f"{where}: choices[0] missing")
    elif not isinstance(c0.get("text"), str):
        problems.append(f"{where}: choices[0].text is {type(c0.get('text')).__name__}")
    return problems


@check(
    "completions.nonstream.shape",
    "POST /v1/completions: JSON {id, object: text_completion, created, model, "
    "choices[0].text, finish_reason stop|length, usage}",
)
async def completions_nonstream_shape(ctx: Context) -> str:
    r = await ctx.request("/v1/completions", completion_body(ctx, stream=False))
    body = require_json(r)
    problems = completion_chunk_problems(body, "body")
    reason = (choice0(body) or {}).get("finish_reason")
    if reason not in ("stop", "length"):
        problems.append(f"finish_reason {reason!r}")
    problems += usage_problems(body.get("usage"))
    if problems:
        raise fail("; ".join(problems[:4]))
    return f"text {r.text[:40]!r}"


@check(
    "completions.stream.shape",
    "POST /v1/completions stream: text_completion chunks with choices[0].text, one id, "
    "exactly one finish_reason, [DONE] last",
)
async def completions_stream_shape(ctx: Context) -> str:
    r = await ctx.request("/v1/completions", completion_body(ctx, stream=True))
    require_sse(r)
    framing(r)
    problems = []
    for i, c in enumerate(chunks_with_choices(r)):
        problems += completion_chunk_problems(c, f"chunk {i}")
    if len(r.ids) != 1:
        problems.append(f"{len(r.ids)} distinct ids")
    if problems:
        raise fail("; ".join(problems[:4]))
    reason = finish_once(r)
    done_last(r)
    return f"{len(r.chunks)} chunks, {reason}, text {r.text[:30]!r}"
