"""The ``models.*`` checks: ``GET /v1/models`` and ``GET /v1/models/{model}``."""

from __future__ import annotations

from harness.conformance.checks.assertions import content_type, fail, is_json_type, require_json
from harness.conformance.checks.context import Context
from harness.conformance.checks.registry import check


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
