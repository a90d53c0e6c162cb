"""The conformance checks: one small async function per assertion, in a registry.

Every check receives a ``Context`` (target, model, key, shared requests) and either
returns a detail string (pass), raises ``CheckFailed(detail)`` (fail) or raises
``NotApplicable(reason)`` (n/a). Requests that several checks judge (the model list,
one non-stream chat, one stream, ...) are made once per run and memoised on the
context, so the whole suite costs a few dozen requests.

All HTTP goes through ``harness.client.stream_request``, which classifies how each
response ended; the checks only look at what it recorded.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import DeferredList, ensureDeferred

from harness.client import (
    CONNECT_ERROR,
    DISCONNECTED,
    DONE,
    ERROR_EVENT,
    HTTP_ERROR,
    TIMEOUT,
    StreamResult,
    stream_request,
)

__all__ = [
    "CHECKS",
    "FAIL",
    "NA",
    "PASS",
    "Check",
    "CheckFailed",
    "Context",
    "NotApplicable",
    "check",
    "select_checks",
]

PASS = "pass"  # noqa: S105 (a result name, not a password)
FAIL = "fail"
NA = "n/a"

# The prompts are plain and short so any model answers quickly; the fixed seed and
# temperature 0 make deterministic servers repeatable.
PROMPT = "Say hello in a few words."
LONG_PROMPT = "Count from one to one hundred, writing every number out in words."
UNICODE_PROMPT = (
    "Répète: héllo wörld — naïve café, 日本語のテキスト, 한국어, Ελληνικά, עברית, "
    "emoji 🚀🧪👩‍💻, combining e\u0301, math ∮ E⋅da = Q, \U0001d518\U0001d52b\U0001d526."
)
SEED = 42
MAX_TOKENS = 32
SMALL_LIMIT = 3  # max_tokens for the "length" checks
LARGE_PROMPT_WORDS = 512  # well within any context window worth testing (>= 1k tokens)
CONCURRENT = 4
UNKNOWN_MODEL = "conformance-no-such-model-7f3a9c"
UNKNOWN_ROUTE = "/v1/conformance-no-such-route"
# Honoured only by harness's fake llama-server (directly or behind a proxy that passes
# headers on): slow tokens with comment pings in between. Other servers ignore it.
KEEPALIVE_FAULT = "token_delay=25ms,ping=5ms"


class CheckFailed(Exception):
    """The server violated what the check asserts; the message is the detail."""


class NotApplicable(Exception):
    """The check cannot judge this server (e.g. no API key given); the message says why."""


CheckFunc = Callable[["Context"], Awaitable[str]]


@dataclass(frozen=True)
class Check:
    name: str
    description: str
    func: CheckFunc


CHECKS: list[Check] = []


def check(name: str, description: str) -> Callable[[CheckFunc], CheckFunc]:
    """Register ``func`` as the check ``name`` (names are unique, order is run order)."""

    def register(func: CheckFunc) -> CheckFunc:
        if any(c.name == name for c in CHECKS):
            raise ValueError(f"duplicate check name {name!r}")
        CHECKS.append(Check(name, description, func))
        return func

    return register


def select_checks(only: list[str] | None) -> list[Check]:
    """The checks named in ``only`` (exact names or group prefixes such as ``chat.stream``).

    Raises ``ValueError`` naming every pattern that matches no check.
    """
    if not only:
        return list(CHECKS)

    def matches(name: str, pattern: str) -> bool:
        return name == pattern or name.startswith(pattern.rstrip(".") + ".")

    unknown = [p for p in only if not any(matches(c.name, p) for c in CHECKS)]
    if unknown:
        raise ValueError(f"unknown check name(s): {', '.join(unknown)}")
    return [c for c in CHECKS if any(matches(c.name, p) for p in only)]


# -- the context: target, requests, memoised results --------------------------------------


class Context:
    """What every check sees: the target and a memo of the requests it shares."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        reactor: Any = None,
        timeout: float = 30.0,
        lenient: bool = False,
    ) -> None:
        self.base_url = normalise_base(base_url)
        self.model = model
        self.api_key = api_key
        self.reactor = reactor
        self.timeout = timeout
        self.lenient = lenient
        self._memo: dict[str, StreamResult] = {}

    # -- requests ---------------------------------------------------------------------

    async def request(
        self,
        path: str,
        body: dict[str, Any] | bytes | None,
        *,
        method: str = "POST",
        headers: dict[str, str] | None = None,
        auth: bool = True,
        **kw: Any,
    ) -> StreamResult:
        send = dict(headers or {})
        if auth and self.api_key is not None:
            send.setdefault("Authorization", f"Bearer {self.api_key}")
        return await stream_request(
            self.base_url + path,
            body,
            method=method,
            headers=send,
            timeout=self.timeout,
            idle_timeout=self.timeout,
            reactor=self.reactor,
            **kw,
        )

    async def memo(self, key: str, make: Callable[[], Awaitable[StreamResult]]) -> StreamResult:
        """The result of ``make()``, made once per run under ``key``.

        Checks run one after the other, so a plain dict suffices.
        """
        if key not in self._memo:
            self._memo[key] = await make()
        return self._memo[key]

    def chat_body(self, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": PROMPT}],
            "temperature": 0,
            "seed": SEED,
            "max_tokens": MAX_TOKENS,
        }
        body.update(extra)
        return body

    async def chat(self, key: str, **extra: Any) -> StreamResult:
        """A memoised chat request with the standard body plus ``extra``."""
        return await self.memo(
            key, lambda: self.request("/v1/chat/completions", self.chat_body(**extra))
        )

    # The requests several checks share.

    async def models(self) -> StreamResult:
        return await self.memo("models", lambda: self.request("/v1/models", None, method="GET"))

    async def chat_nonstream(self) -> StreamResult:
        return await self.chat("chat", stream=False)

    async def chat_nonstream_again(self) -> StreamResult:
        await self.chat_nonstream()  # strictly after the first, never interleaved
        return await self.chat("chat.again", stream=False)

    async def chat_stream(self) -> StreamResult:
        return await self.chat("stream", stream=True)

    async def chat_stream_usage(self) -> StreamResult:
        return await self.chat("stream.usage", stream=True, stream_options={"include_usage": True})

    def ok_statuses(self, strict: set[int]) -> set[int]:
        """Strict: exactly ``strict``; lenient: any 4xx but 401/403 (auth is its own check)."""
        if self.lenient:
            return set(range(400, 500)) - {401, 403}
        return strict


def normalise_base(url: str) -> str:
    """``http://h:p``, ``http://h:p/``, ``http://h:p/v1`` -> ``http://h:p`` (no slash)."""
    base = url.strip().rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return base


# -- assertion helpers ---------------------------------------------------------------------


def fail(detail: str) -> CheckFailed:
    return CheckFailed(detail)


def brief(r: StreamResult) -> str:
    """One line saying how a response ended, for failure details."""
    parts = [f"outcome={r.outcome}", f"status={r.status}"]
    if r.end_reason and r.end_reason != "complete":
        parts.append(f"end={r.end_reason}")
    if r.error:
        msg = str(r.error.get("message", r.error))[:120]
        parts.append(f"error={msg!r}")
    if r.exception:
        parts.append(f"exception={r.exception[:120]}")
    return " ".join(parts)


def content_type(r: StreamResult) -> str:
    raw = r.headers.get("content-type", [""])[-1]
    return raw.split(";", 1)[0].strip().lower()


def is_json_type(ctype: str) -> bool:
    return ctype == "application/json" or (ctype.startswith("application/") and "+json" in ctype)


def require_json(r: StreamResult) -> dict[str, Any]:
    """A complete 200 JSON object body, else fail."""
    if r.outcome != DONE or r.status != 200 or r.is_sse:
        raise fail(f"expected a 200 JSON body: {brief(r)}")
    if not isinstance(r.json_body, dict):
        raise fail(f"body is not a JSON object: {type(r.json_body).__name__}")
    return r.json_body


def require_sse(r: StreamResult) -> None:
    """A 200 event stream (however it ended), else fail."""
    if r.status != 200:
        raise fail(f"expected a 200 event stream: {brief(r)}")
    if not r.is_sse:
        raise fail(f"Content-Type is {content_type(r)!r}, not text/event-stream")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def usage_problems(usage: Any) -> list[str]:
    """What is wrong with a ``usage`` object (empty list: nothing)."""
    if not isinstance(usage, dict):
        return [f"usage is {type(usage).__name__}, not an object"]
    problems = []
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    for key in keys:
        value = usage.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append(f"usage.{key} is {value!r}, not an integer >= 0")
    if not problems:
        p, c, t = (usage[k] for k in keys)
        if p + c != t:
            problems.append(f"prompt_tokens {p} + completion_tokens {c} != total_tokens {t}")
        if p == 0:
            problems.append("prompt_tokens is 0 for a non-empty prompt")
    return problems


def choice0(obj: dict[str, Any]) -> dict[str, Any] | None:
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return None


def error_problems(r: StreamResult, *, require_json_body: bool = True) -> list[str]:
    """What is wrong with an error response's body (OpenAI shape, JSON content type)."""
    problems = []
    if r.status is not None and r.status >= 500:
        problems.append(f"client input gave a server error {r.status}")
    if not require_json_body:
        return problems
    ctype = content_type(r)
    if not is_json_type(ctype):
        problems.append(f"Content-Type {ctype!r} is not JSON")
    try:
        obj = json.loads(r.body or b"")
    except ValueError:
        snippet = (r.body or b"")[:80]
        problems.append(f"body is not JSON: {snippet!r}")
        return problems
    err = obj.get("error") if isinstance(obj, dict) else None
    if not isinstance(err, dict):
        problems.append('body has no "error" object')
    elif not isinstance(err.get("message"), str) or not err["message"]:
        problems.append('"error.message" is not a non-empty string')
    return problems


def expect_error(
    r: StreamResult,
    statuses: set[int],
    *,
    code: str | None = None,
    require_json_body: bool = True,
) -> str:
    """Fail unless ``r`` is an HTTP error with a status in ``statuses`` and a good body."""
    problems = []
    if r.outcome != HTTP_ERROR or r.status not in statuses:
        want = "/".join(map(str, sorted(statuses))) if len(statuses) < 5 else "4xx"
        problems.append(f"status {r.status} (want {want}; {brief(r)})")
    if r.outcome == HTTP_ERROR:
        problems += error_problems(r, require_json_body=require_json_body)
        if code is not None and r.error is not None and r.error.get("code") != code:
            problems.append(f"error.code is {r.error.get('code')!r}, want {code!r}")
    if problems:
        raise fail("; ".join(problems))
    message = (r.error or {}).get("message", "")
    return f"{r.status}: {str(message)[:100]}"


def deterministic_text(first: StreamResult, again: StreamResult) -> str:
    """The text if two identical temperature-0 requests agree, else NotApplicable."""
    a, b = require_json(first), require_json(again)
    ta, tb = text_of(a), text_of(b)
    if ta != tb:
        raise NotApplicable(
            "the server is not deterministic at temperature 0 with a fixed seed "
            f"({ta[:40]!r} vs {tb[:40]!r})"
        )
    return ta


def text_of(body: dict[str, Any]) -> str:
    c0 = choice0(body) or {}
    message = c0.get("message")
    content = message.get("content") if isinstance(message, dict) else c0.get("text")
    return content if isinstance(content, str) else ""


def chunks_with_choices(r: StreamResult) -> list[dict[str, Any]]:
    return [c for c in r.chunks if isinstance(c.get("choices"), list) and c["choices"]]


# -- models --------------------------------------------------------------------------------


@check("models.shape", "GET /v1/models: 200 JSON {object: list, data: [{id, object: model}]}")
async def models_shape(ctx: Context) -> str:
    r = await ctx.models()
    body = require_json(r)
    problems = []
    if not is_json_type(content_type(r)):
        problems.append(f"Content-Type {content_type(r)!r} is not JSON")
    if body.get("object") != "list":
        problems.append(f"object is {body.get('object')!r}, not 'list'")
    data = body.get("data")
    if not isinstance(data, list):
        raise fail("; ".join([*problems, "data is not an array"]))
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            problems.append(f"data[{i}] is not an object")
            continue
        if not isinstance(entry.get("id"), str) or not entry["id"]:
            problems.append(f"data[{i}].id is {entry.get('id')!r}")
        if entry.get("object") != "model":
            problems.append(f"data[{i}].object is {entry.get('object')!r}, not 'model'")
    if problems:
        raise fail("; ".join(problems[:5]))
    return f"{len(data)} model(s)"


@check("models.lists_model", "the model under test is listed in /v1/models")
async def models_lists_model(ctx: Context) -> str:
    body = require_json(await ctx.models())
    data = body.get("data")
    ids = [e.get("id") for e in data if isinstance(e, dict)] if isinstance(data, list) else []
    if ctx.model not in ids:
        raise fail(f"{ctx.model!r} not among {ids[:10]!r}")
    return f"{ctx.model!r} listed"


@check("models.retrieve", "GET /v1/models/{model}: 200 JSON {id: model, object: model}")
async def models_retrieve(ctx: Context) -> str:
    r = await ctx.request(f"/v1/models/{ctx.model}", None, method="GET")
    body = require_json(r)
    if body.get("id") != ctx.model or body.get("object") != "model":
        raise fail(f"id={body.get('id')!r} object={body.get('object')!r}")
    return "ok"


# -- chat, non-stream ------------------------------------------------------------------------


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
    problems = usage_problems(body.get("usage"))
    if problems:
        raise fail("; ".join(problems))
    u = body["usage"]
    return f"{u['prompt_tokens']}+{u['completion_tokens']}={u['total_tokens']}"


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
    problems = []
    if reason != "length":
        problems.append(f"finish_reason is {reason!r}, not 'length'")
    usage: Any = obj.get("usage")
    if usage_problems(usage):
        problems.append("no valid usage to check the limit")
    elif usage["completion_tokens"] > SMALL_LIMIT:
        problems.append(f"completion_tokens {usage['completion_tokens']} > {SMALL_LIMIT}")
    if problems:
        raise fail("; ".join(problems))
    return f"length after {usage['completion_tokens']} token(s)"


# -- chat, stream ----------------------------------------------------------------------------


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


def framing(r: StreamResult) -> str:
    problems = []
    for i, ev in enumerate(r.events):
        if ev.extra:
            problems.append(f"event {i} has non-standard field(s) {[k for k, _ in ev.extra]}")
        if ev.data is None:
            problems.append(f"event {i} has no data field")
            continue
        if ev.is_done:
            continue
        try:
            obj = json.loads(ev.data)
        except ValueError:
            problems.append(f"event {i} data is not JSON: {ev.data[:60]!r}")
            continue
        if not isinstance(obj, dict):
            problems.append(f"event {i} data is not a JSON object")
    if not r.events:
        problems.append("no events")
    if problems:
        raise fail("; ".join(problems[:4]))
    return f"{r.n_events} events, {r.comments} comments"


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


def finish_once(r: StreamResult) -> str:
    with_choices = chunks_with_choices(r)
    finishing = [
        i for i, c in enumerate(with_choices) if (choice0(c) or {}).get("finish_reason") is not None
    ]
    if len(finishing) != 1:
        raise fail(f"{len(finishing)} chunks carry a finish_reason")
    if finishing[0] != len(with_choices) - 1:
        raise fail(f"finish_reason on chunk {finishing[0]} of {len(with_choices)}, not the last")
    reason = (choice0(with_choices[finishing[0]]) or {}).get("finish_reason")
    if reason not in ("stop", "length"):
        raise fail(f"finish_reason is {reason!r}")
    return str(reason)


@check(
    "chat.stream.done_last",
    "stream chat: data: [DONE] is the last event, nothing follows it, and the body ends",
)
async def chat_stream_done_last(ctx: Context) -> str:
    r = await ctx.chat_stream()
    require_sse(r)
    return done_last(r)


def done_last(r: StreamResult) -> str:
    if not any(ev.is_done for ev in r.events):
        raise fail(f"no [DONE]: {brief(r)}")
    if not r.events[-1].is_done or r.after_done:
        raise fail("something arrived after [DONE]")
    if r.end_reason not in ("complete", "closed"):
        raise fail(f"the body did not end after [DONE] (end={r.end_reason})")
    return f"[DONE] is event {r.n_events}"


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
    problems = usage_problems(last.get("usage"))
    if problems:
        raise fail("; ".join(problems))
    u = last["usage"]
    return f"{u['prompt_tokens']}+{u['completion_tokens']}={u['total_tokens']}"


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
    problems = []
    if r.finish_reason != "length":
        problems.append(f"finish_reason is {r.finish_reason!r}, not 'length'")
    if usage_problems(r.usage):
        problems.append("no valid usage to check the limit")
    elif r.usage is not None and r.usage["completion_tokens"] > SMALL_LIMIT:
        problems.append(f"completion_tokens {r.usage['completion_tokens']} > {SMALL_LIMIT}")
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


# -- determinism -----------------------------------------------------------------------------


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


# -- text completions ------------------------------------------------------------------------


def completion_body(ctx: Context, **extra: Any) -> dict[str, Any]:
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


# -- errors ----------------------------------------------------------------------------------


async def post_chat_raw(ctx: Context, body: dict[str, Any] | bytes) -> StreamResult:
    return await ctx.request("/v1/chat/completions", body)


@check("errors.missing_model", "chat without model: 400 with an OpenAI error body")
async def errors_missing_model(ctx: Context) -> str:
    body = ctx.chat_body()
    del body["model"]
    return expect_error(await post_chat_raw(ctx, body), ctx.ok_statuses({400}))


@check("errors.missing_messages", "chat without messages: 400 with an OpenAI error body")
async def errors_missing_messages(ctx: Context) -> str:
    body = ctx.chat_body()
    del body["messages"]
    return expect_error(await post_chat_raw(ctx, body), ctx.ok_statuses({400}))


@check("errors.messages_not_array", 'chat with messages: "hello": 400 with an OpenAI error body')
async def errors_messages_not_array(ctx: Context) -> str:
    return expect_error(
        await post_chat_raw(ctx, ctx.chat_body(messages="hello")), ctx.ok_statuses({400})
    )


@check("errors.empty_messages", "chat with messages: []: 400 with an OpenAI error body")
async def errors_empty_messages(ctx: Context) -> str:
    return expect_error(
        await post_chat_raw(ctx, ctx.chat_body(messages=[])), ctx.ok_statuses({400})
    )


@check(
    "errors.invalid_json", "chat with a body that is not valid JSON: 400 with an OpenAI error body"
)
async def errors_invalid_json(ctx: Context) -> str:
    raw = b'{"model": ' + json.dumps(ctx.model).encode() + b', "messages": [{"role": "user"'
    return expect_error(await post_chat_raw(ctx, raw), ctx.ok_statuses({400}))


@check("errors.body_not_object", "chat with a JSON array as body: 400 with an OpenAI error body")
async def errors_body_not_object(ctx: Context) -> str:
    return expect_error(await post_chat_raw(ctx, b"[1, 2, 3]"), ctx.ok_statuses({400}))


@check(
    "errors.unknown_model",
    "chat for a model the server does not have: 404 with error.code model_not_found",
)
async def errors_unknown_model(ctx: Context) -> str:
    r = await post_chat_raw(ctx, ctx.chat_body(model=UNKNOWN_MODEL))
    if ctx.lenient:
        return expect_error(r, {400, 404})
    return expect_error(r, {404}, code="model_not_found")


@check("errors.max_tokens_type", 'chat with max_tokens: "x": 400 with an OpenAI error body')
async def errors_max_tokens_type(ctx: Context) -> str:
    return expect_error(
        await post_chat_raw(ctx, ctx.chat_body(max_tokens="x")), ctx.ok_statuses({400})
    )


@check("errors.stream_type", 'chat with stream: "yes": 400 with an OpenAI error body')
async def errors_stream_type(ctx: Context) -> str:
    return expect_error(
        await post_chat_raw(ctx, ctx.chat_body(stream="yes")), ctx.ok_statuses({400})
    )


@check("errors.temperature_type", 'chat with temperature: "hot": 400 with an OpenAI error body')
async def errors_temperature_type(ctx: Context) -> str:
    return expect_error(
        await post_chat_raw(ctx, ctx.chat_body(temperature="hot")), ctx.ok_statuses({400})
    )


# -- routes ----------------------------------------------------------------------------------


@check("routes.unknown", f"GET {UNKNOWN_ROUTE}: 404 with a JSON error body")
async def routes_unknown(ctx: Context) -> str:
    r = await ctx.request(UNKNOWN_ROUTE, None, method="GET")
    return expect_error(r, {404}, require_json_body=not ctx.lenient)


@check(
    "routes.method_not_allowed",
    "GET /v1/chat/completions: 405 (or 404) with a JSON error body",
)
async def routes_method_not_allowed(ctx: Context) -> str:
    r = await ctx.request("/v1/chat/completions", None, method="GET")
    return expect_error(r, {404, 405}, require_json_body=not ctx.lenient)


# -- authentication --------------------------------------------------------------------------


def need_key(ctx: Context) -> None:
    if ctx.api_key is None:
        raise NotApplicable("no --api-key given: the server is not known to require a key")


@check("auth.missing_key", "with an API key required: a request without a key gets 401 JSON")
async def auth_missing_key(ctx: Context) -> str:
    need_key(ctx)
    r = await ctx.request("/v1/chat/completions", ctx.chat_body(), auth=False)
    return expect_error(r, {401})


@check("auth.wrong_key", "with an API key required: a request with a wrong key gets 401 JSON")
async def auth_wrong_key(ctx: Context) -> str:
    need_key(ctx)
    wrong = f"wrong-{ctx.api_key}-conformance"
    r = await ctx.request(
        "/v1/chat/completions",
        ctx.chat_body(),
        auth=False,
        headers={"Authorization": f"Bearer {wrong}"},
    )
    return expect_error(r, {401})


# -- robustness ------------------------------------------------------------------------------


async def expect_done_stream(ctx: Context, body: dict[str, Any]) -> StreamResult:
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


# Outcomes meaning "no HTTP server answered at all" (the runner's reachability probe).
UNREACHABLE_OUTCOMES = frozenset({CONNECT_ERROR, TIMEOUT})
