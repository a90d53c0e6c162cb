"""Ollama API checks: the listings, ``/api/chat`` and ``/api/generate`` (NDJSON streams
and whole answers), ``/api/embed`` and Ollama's error shape.

Only Ollama's documented API is assumed (github.com/ollama/ollama, docs/api.md), so the
group runs against a real Ollama as well as against a server that translates it. A
stream is ``application/x-ndjson``, one JSON object per line; it is complete when its
last line has ``"done": true`` (with ``done_reason`` and the timing fields, in
nanoseconds), and an error is a line ``{"error": "..."}``: ``harness.client`` reads it by
its ``OLLAMA`` dialect. Errors before the first line are ``{"error": "..."}`` with a
status. The requests several checks judge are made once per run (``Context.memo``).
"""

from __future__ import annotations

import json
from typing import Any

from harness.client import HTTP_ERROR, StreamResult
from harness.conformance.checks.assertions import brief, content_type, fail, is_int, is_json_type
from harness.conformance.checks.context import MAX_TOKENS, PROMPT, SEED, Context
from harness.conformance.checks.registry import NotApplicable, check

__all__ = ["count", "ollama_body", "ollama_error_problems", "ollama_request", "tag_problems"]

CHAT = "/api/chat"
GENERATE = "/api/generate"
UNKNOWN_MODEL = "conformance-no-such-model"


def ollama_body(ctx: Context, kind: str, *, stream: bool, **extra: Any) -> dict[str, Any]:
    """The standard ``/api/chat`` (``kind`` chat) or ``/api/generate`` body: the short
    prompt, temperature 0, a seed and ``num_predict`` in ``options``."""
    body: dict[str, Any] = {"model": ctx.model, "stream": stream}
    if kind == "chat":
        body["messages"] = [{"role": "user", "content": PROMPT}]
    else:
        body["prompt"] = PROMPT
    body["options"] = {"temperature": 0, "seed": SEED, "num_predict": MAX_TOKENS}
    body.update(extra)
    return body


async def ollama_request(ctx: Context, kind: str, *, stream: bool, again: bool = False) -> Any:
    """The standard chat or generate request, stream or not, once per run each
    (``again``: the same whole request a second time, for the determinism judgement)."""
    path = CHAT if kind == "chat" else GENERATE
    body = ollama_body(ctx, kind, stream=stream)
    key = f"ollama.{kind}.{stream}{'.again' if again else ''}"
    return await ctx.memo(key, lambda: ctx.request(path, body))


async def listing(ctx: Context, path: str) -> dict[str, Any]:
    """``GET path`` (``/api/version``, ``/api/tags``, ``/api/ps``): a 200 JSON object."""
    r = await ctx.memo(f"ollama.{path}", lambda: ctx.request(path, None, method="GET"))
    return require_object(r)


def require_object(r: StreamResult) -> dict[str, Any]:
    """A whole 200 JSON object, else fail (a stream is no answer here)."""
    if r.status != 200 or r.is_stream or not isinstance(r.json_body, dict):
        raise fail(f"expected a 200 JSON object: {brief(r)}")
    return r.json_body


def ollama_error_problems(r: StreamResult, statuses: set[int]) -> list[str]:
    """What is wrong with an error answer: status, JSON type, ``{"error": "<text>"}``."""
    if r.outcome != HTTP_ERROR:
        return [f"no HTTP error before the first line: {brief(r)}"]
    problems = []
    if r.status not in statuses:
        problems.append(f"status {r.status} (want {'/'.join(map(str, sorted(statuses)))})")
    if not is_json_type(content_type(r)):
        problems.append(f"Content-Type {content_type(r)!r}")
    raw = r.body or b""
    try:
        obj = json.loads(raw)
    except ValueError:
        obj = None
    if not isinstance(obj, dict) or not isinstance(obj.get("error"), str) or not obj["error"]:
        problems.append(f'body is not {{"error": "<text>"}}: {raw[:80]!r}')
    return problems


def expect_ollama_error(r: StreamResult, statuses: set[int]) -> str:
    """Fail unless ``r`` is an Ollama error with one of ``statuses``; detail: its text."""
    problems = ollama_error_problems(r, statuses)
    if problems:
        raise fail("; ".join(problems))
    return f"{r.status}: {(r.error or {}).get('message', '')}"[:100]


def tag_problems(entry: Any, where: str) -> list[str]:
    """What is wrong with one model entry of ``/api/tags`` or ``/api/ps``."""
    if not isinstance(entry, dict):
        return [f"{where} is not an object"]
    problems = [
        f"{where}.{key} is {entry.get(key)!r:.40}"
        for key in ("name", "model", "digest")
        if not isinstance(entry.get(key), str) or not entry[key]
    ]
    if not is_int(entry.get("size")) or entry["size"] < 0:
        problems.append(f"{where}.size is {entry.get('size')!r}")
    details = entry.get("details")
    if not isinstance(details, dict):
        problems.append(f"{where}.details is {details!r:.40}")
    return problems


def count(value: Any) -> int | None:
    """``value`` if it is an integer (not a bool), else None."""
    return value if is_int(value) else None


def names_model(entry: Any, model: str) -> bool:
    """Whether a listed entry is ``model`` (Ollama adds ``:latest`` to a bare name)."""
    if not isinstance(entry, dict):
        return False
    return any(entry.get(k) in (model, f"{model}:latest") for k in ("name", "model"))


@check("ollama.version", 'GET /api/version: 200 JSON {"version": "<major.minor.patch>"}')
async def ollama_version(ctx: Context) -> str:
    body = await listing(ctx, "/api/version")
    version = body.get("version")
    parts = version.split("-", 1)[0].split(".") if isinstance(version, str) else []
    if len(parts) < 2 or not all(p.isdigit() for p in parts):
        raise fail(f"version is {version!r}, not a dotted version number")
    return f"version {version}"


@check(
    "ollama.tags",
    "GET /api/tags: {models: [{name, model, size, digest, details, modified_at}]} naming the "
    "model under test",
)
async def ollama_tags(ctx: Context) -> str:
    body = await listing(ctx, "/api/tags")
    models = body.get("models")
    if not isinstance(models, list):
        raise fail(f"models is {models!r:.60}, not a list")
    problems = [p for i, m in enumerate(models) for p in tag_problems(m, f"models[{i}]")]
    problems += [
        f"models[{i}].modified_at is {m.get('modified_at')!r}"
        for i, m in enumerate(models)
        if isinstance(m, dict) and not isinstance(m.get("modified_at"), str)
    ]
    if not any(names_model(m, ctx.model) for m in models):
        problems.append(f"{ctx.model!r} is not listed")
    if problems:
        raise fail("; ".join(problems[:4]))
    return f"{len(models)} model(s)"


async def show(ctx: Context) -> StreamResult:
    """``POST /api/show`` of the model under test, once per run."""
    return await ctx.memo("ollama.show", lambda: ctx.request("/api/show", {"model": ctx.model}))


@check(
    "ollama.show.shape",
    "POST /api/show: 200 JSON with details, model_info (objects) and capabilities (strings, "
    "completion among them)",
)
async def ollama_show_shape(ctx: Context) -> str:
    body = require_object(await show(ctx))
    problems = [
        f"{key} is {body.get(key)!r:.40}, not an object"
        for key in ("details", "model_info")
        if not isinstance(body.get(key), dict)
    ]
    caps = body.get("capabilities")
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        problems.append(f"capabilities is {caps!r:.60}, not a list of strings")
    elif "completion" not in caps:
        problems.append(f"capabilities {caps} lack completion")
    if problems or not isinstance(caps, list):
        raise fail("; ".join(problems))
    return f"capabilities {', '.join(caps)}"


@check(
    "ollama.show.context_length",
    "POST /api/show: model_info has general.architecture and an integer "
    "<architecture>.context_length > 0 (n/a when model_info is empty)",
)
async def ollama_show_context_length(ctx: Context) -> str:
    info = require_object(await show(ctx)).get("model_info")
    if not isinstance(info, dict):
        raise fail(f"model_info is {info!r:.40}")
    if not info:
        raise NotApplicable("model_info is empty: the server knows no model file for it")
    arch = info.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise fail(f"general.architecture is {arch!r}")
    length = count(info.get(f"{arch}.context_length"))
    if length is None or length <= 0:
        raise fail(f"{arch}.context_length is {info.get(f'{arch}.context_length')!r}")
    return f"{arch}.context_length {length}"


@check(
    "ollama.ps",
    "GET /api/ps after a chat: {models: [...]} whose entries have name, model, size, digest, "
    "details, expires_at, size_vram (n/a when none is loaded)",
)
async def ollama_ps(ctx: Context) -> str:
    await ollama_request(ctx, "chat", stream=False)  # something is loaded now, if it can be
    models = (await listing(ctx, "/api/ps")).get("models")
    if not isinstance(models, list):
        raise fail(f"models is {models!r:.60}, not a list")
    if not models:
        raise NotApplicable("no model is loaded (a server that loads none of its own)")
    problems = [p for i, m in enumerate(models) for p in tag_problems(m, f"models[{i}]")]
    for i, m in enumerate(models):
        if not isinstance(m, dict):
            continue
        if not isinstance(m.get("expires_at"), str):
            problems.append(f"models[{i}].expires_at is {m.get('expires_at')!r}")
        if not is_int(m.get("size_vram")) or m["size_vram"] < 0:
            problems.append(f"models[{i}].size_vram is {m.get('size_vram')!r}")
    if problems:
        raise fail("; ".join(problems[:4]))
    listed = "listed" if any(names_model(m, ctx.model) for m in models) else "not listed"
    return f"{len(models)} loaded, {ctx.model} {listed}"


# -- errors -------------------------------------------------------------------------------


@check(
    "ollama.errors.unknown_model",
    'POST /api/chat (a stream) for a model the server does not have: 404 {"error": "..."} '
    "before the first line",
)
async def ollama_errors_unknown_model(ctx: Context) -> str:
    body = ollama_body(ctx, "chat", stream=True, model=UNKNOWN_MODEL)
    r = await ctx.request(CHAT, body)
    return expect_ollama_error(r, {404} if not ctx.lenient else {400, 404})


@check(
    "ollama.errors.show_unknown_model",
    'POST /api/show for a model the server does not have: 404 {"error": "..."}',
)
async def ollama_errors_show_unknown_model(ctx: Context) -> str:
    r = await ctx.request("/api/show", {"model": UNKNOWN_MODEL})
    return expect_ollama_error(r, {404} if not ctx.lenient else {400, 404})


@check("ollama.errors.invalid_json", 'POST /api/chat with a body that is not JSON: 400 {"error"}')
async def ollama_errors_invalid_json(ctx: Context) -> str:
    r = await ctx.request(CHAT, b'{"model": "m", "messages": [')
    return expect_ollama_error(r, ctx.ok_statuses({400}))


@check("ollama.errors.missing_model", 'POST /api/chat without model: 400 {"error"}')
async def ollama_errors_missing_model(ctx: Context) -> str:
    body = ollama_body(ctx, "chat", stream=False)
    del body["model"]
    return expect_ollama_error(await ctx.request(CHAT, body), ctx.ok_statuses({400}))


@check("ollama.errors.messages_type", 'POST /api/chat with messages: "hello": 400 {"error"}')
async def ollama_errors_messages_type(ctx: Context) -> str:
    body = ollama_body(ctx, "chat", stream=False, messages="hello")
    return expect_ollama_error(await ctx.request(CHAT, body), ctx.ok_statuses({400}))
