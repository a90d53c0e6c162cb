"""llama.cpp native route checks: ``/completion``, ``/tokenize`` + ``/detokenize``,
``/apply-template``, ``/props`` and ``/health`` (tools/server/README.md of llama.cpp).

A native stream is ``data:`` events without names or ``[DONE]``; the event with
``"stop": true`` is its one complete ending (``server_core.sse.dialects.NATIVE``).
"""

from __future__ import annotations

from harness.conformance.checks.assertions import fail, is_int, require_json, require_sse
from harness.conformance.checks.context import PROMPT, Context
from harness.conformance.checks.dialect_streams import (
    framing_problems,
    read_frames,
    require_ending,
)
from harness.conformance.checks.registry import check
from server_core.sse.dialects import NATIVE as DIALECT

# Plain lower-case words: every tokenizer gives them back as they were (up to spacing).
ROUND_TRIP_TEXT = "hello world this is a conformance check"


def same_words(a: str, b: str) -> bool:
    """Equal up to whitespace (SentencePiece tokenizers add or drop a leading space)."""
    return a.split() == b.split()


@check(
    "native.completion.nonstream",
    'POST /completion: 200 JSON with a string content and "stop": true',
)
async def native_completion_nonstream(ctx: Context) -> str:
    body = require_json(await ctx.native(stream=False))
    problems = []
    if not isinstance(body.get("content"), str):
        problems.append(f"content is {type(body.get('content')).__name__}, not a string")
    if body.get("stop") is not True:
        problems.append(f"stop is {body.get('stop')!r}, not true")
    if problems:
        raise fail("; ".join(problems))
    return f"content {body['content']!r:.60}"


@check(
    "native.stream.framing",
    "POST /completion stream: 200 text/event-stream; every event is data: holding a JSON object",
)
async def native_stream_framing(ctx: Context) -> str:
    r = await ctx.native(stream=True)
    require_sse(r)
    problems = framing_problems(r)
    if problems:
        raise fail("; ".join(problems[:4]))
    return f"{r.n_events} events"


@check(
    "native.stream.content",
    'POST /completion stream: every event has a string content; only the last has "stop": true',
)
async def native_stream_content(ctx: Context) -> str:
    r = await ctx.native(stream=True)
    require_sse(r)
    seen = read_frames(r, DIALECT)
    problems = []
    for s in seen:
        if not isinstance(s.payload, dict) or not isinstance(s.payload.get("content"), str):
            problems.append(f"event {s.index} has no string content")
    stops = [s.index for s in seen if isinstance(s.payload, dict) and s.payload.get("stop") is True]
    if stops and stops != [seen[-1].index]:
        problems.append(f'"stop": true on event(s) {stops} of {len(seen)}')
    if problems:
        raise fail("; ".join(problems[:4]))
    text = "".join(s.payload["content"] for s in seen)
    return f"{len(seen)} events, text {text!r:.50}"


@check(
    "native.stream.stop_last",
    'POST /completion stream: exactly one event with "stop": true, the last; no error '
    "event; the body ends after it",
)
async def native_stream_stop_last(ctx: Context) -> str:
    r = await ctx.native(stream=True)
    require_sse(r)
    return require_ending(r, DIALECT, '"stop": true')


@check(
    "native.tokenize_roundtrip",
    "POST /tokenize gives integer tokens; POST /detokenize gives the same text back",
)
async def native_tokenize_roundtrip(ctx: Context) -> str:
    tok = require_json(await ctx.request("/tokenize", {"content": ROUND_TRIP_TEXT}))
    tokens = tok.get("tokens")
    if not isinstance(tokens, list) or not tokens or not all(is_int(t) for t in tokens):
        raise fail(f"/tokenize tokens is {str(tokens)[:60]}, not a non-empty integer array")
    detok = require_json(await ctx.request("/detokenize", {"tokens": tokens}))
    content = detok.get("content")
    if not isinstance(content, str) or not same_words(content, ROUND_TRIP_TEXT):
        raise fail(f"/detokenize gave {content!r:.60}, want {ROUND_TRIP_TEXT!r}")
    return f"{len(tokens)} tokens round trip"


@check(
    "native.apply_template",
    "POST /apply-template: 200 JSON with a string prompt that contains the message",
)
async def native_apply_template(ctx: Context) -> str:
    messages = [{"role": "user", "content": PROMPT}]
    body = require_json(await ctx.request("/apply-template", {"messages": messages}))
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise fail(f"prompt is {type(prompt).__name__}, not a string")
    if PROMPT not in prompt:
        raise fail(f"the prompt {prompt!r:.60} does not contain the message")
    return f"prompt {prompt!r:.60}"


@check(
    "native.props",
    "GET /props: 200 JSON with a default_generation_settings object",
)
async def native_props(ctx: Context) -> str:
    body = require_json(await ctx.request("/props", None, method="GET"))
    settings = body.get("default_generation_settings")
    if not isinstance(settings, dict):
        raise fail(
            f"default_generation_settings is {type(settings).__name__}; keys {sorted(body)[:6]}"
        )
    return f"{len(settings)} default generation settings"


@check("native.health", 'GET /health: 200 JSON {"status": "ok"}')
async def native_health(ctx: Context) -> str:
    body = require_json(await ctx.request("/health", None, method="GET"))
    if body.get("status") != "ok":
        raise fail(f"status is {body.get('status')!r}, not 'ok'")
    return "ok"
