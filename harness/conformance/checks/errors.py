"""Error checks: invalid chat requests, unknown routes and methods, and authentication.

Every error must be an HTTP error (a 4xx, never a 5xx, for client input) with an
OpenAI error body ``{"error": {"message": ...}}``; ``--lenient`` accepts any 4xx.
"""

from __future__ import annotations

import json
from typing import Any

from harness.client import StreamResult
from harness.conformance.checks.assertions import expect_error
from harness.conformance.checks.context import Context
from harness.conformance.checks.registry import NotApplicable, check

UNKNOWN_MODEL = "conformance-no-such-model-7f3a9c"
UNKNOWN_ROUTE = "/v1/conformance-no-such-route"


async def post_chat_raw(ctx: Context, body: dict[str, Any] | bytes) -> StreamResult:
    """POST ``body`` (a dict, or raw bytes that need not be JSON) as a chat request."""
    return await ctx.request("/v1/chat/completions", body)


@check(
    "errors.missing_model",
    "chat without model: a whole answer from a default model, else 400 with an OpenAI error",
)
async def errors_missing_model(ctx: Context) -> str:
    body = ctx.chat_body()
    del body["model"]
    r = await post_chat_raw(ctx, body)
    if r.outcome == "done" and r.status == 200:
        # llama-server serves a request naming no model, and so may a proxy with a
        # default model (issue 11): complete, never a truncated or broken answer.
        return "200: served by the default model"
    return expect_error(r, ctx.ok_statuses({400}))


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
    """Only a target given an API key is known to require one."""
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
