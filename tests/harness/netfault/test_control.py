"""Tests for harness.netfault._control: the JSON control API over real HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.web.client import HTTPConnectionPool

from tests.harness.netfault.support import Env, reactor

pytestmark = pytest.mark.timeout(20)


@pytest_twisted.ensureDeferred
async def test_control_api_round_trip_and_errors(env: Env) -> None:
    proxy = await env.proxy(env.upstream(b"q" * 100))
    control = await proxy.start_control()
    assert control == proxy.control_port
    base = f"http://127.0.0.1:{control}"
    pool = HTTPConnectionPool(reactor, persistent=False)

    async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"pool": pool}
        if body is not None:
            kwargs["data"] = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = await treq.request(method, base + path, **kwargs)
        text = await response.content()
        return response.code, json.loads(text) if text else None

    assert await call("GET", "/toxics") == (200, [])
    toxic = {
        "name": "cut",
        "type": "limit_data",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": {"bytes": 10},
    }
    assert await call("POST", "/toxics", toxic) == (200, toxic)
    status, body = await call("POST", "/toxics", toxic)
    assert status == 409 and body["status"] == 409 and "already exists" in body["error"]
    status, body = await call("POST", "/toxics", {"type": "latency", "attributes": {"x": 1}})
    assert status == 400 and "unknown attribute" in body["error"]
    status, body = await call("POST", "/toxics", {"type": "warp"})
    assert status == 400 and "unknown toxic type" in body["error"]
    status, body = await call("POST", "/toxics", b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]
    assert await call("GET", "/toxics") == (200, [toxic])
    assert await call("GET", "/toxics/cut") == (200, toxic)

    # the toxic added over HTTP acts on traffic
    client = await env.connect(proxy.port)
    await client.lost
    assert client.data == b"q" * 10

    status, stats = await call("GET", "/stats")
    assert status == 200 and stats["connections_total"] == 1
    assert stats["downstream"]["bytes_out"] == 10
    assert stats["toxics"] == {"cut": {"applied": 1, "skipped": 0}}

    status, body = await call("DELETE", "/toxics/nope")
    assert status == 404 and "nope" in body["error"]
    assert await call("DELETE", "/toxics/cut") == (204, None)
    assert await call("POST", "/toxics", {"type": "latency"}) == (
        200,
        {
            "name": "latency_downstream",
            "type": "latency",
            "stream": "downstream",
            "toxicity": 1.0,
            "attributes": {"latency": 0, "jitter": 0},
        },
    )
    assert await call("POST", "/reset") == (204, None)
    assert await call("GET", "/toxics") == (200, [])
    assert (await call("GET", "/nowhere"))[0] == 404
    assert (await call("PUT", "/toxics"))[0] == 405
    status, info = await call("GET", "/")
    assert status == 200 and info["listen"] == f"127.0.0.1:{proxy.port}"
