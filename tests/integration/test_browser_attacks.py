"""Browser attacks on a local server, over real sockets against the whole stack.

A web page can make the browser send a cross-site ``text/plain`` POST (no preflight) to
``127.0.0.1``, and a page whose name was rebound to ``127.0.0.1`` sends its own name as
``Host`` and can read the answers. Each test shows the attack refused before any work
(the fake upstream counts the requests that reached it), and that clients that are not
browsers, which send neither ``Origin`` nor ``Sec-Fetch-*``, work as before.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from harness.client import stream_request
from tests.integration.stack import stack

pytestmark = pytest.mark.timeout(30)

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
CROSS_SITE = {
    "Content-Type": "text/plain;charset=UTF-8",  # what a page's no-cors fetch sends
    "Origin": "https://evil.example",
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "no-cors",
}


def error_code(result: Any) -> str:
    assert result.headers["content-type"] == ["application/json"]
    error = json.loads(result.body)["error"]
    assert set(error) >= {"message", "type", "code", "param"} and error["message"]
    return str(error["code"])


@pytest_twisted.ensureDeferred
async def test_a_cross_site_text_plain_post_never_reaches_the_model() -> None:
    async with stack() as s:
        raw = json.dumps(CHAT).encode()
        for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/unload"):
            result = await stream_request(s.url + path, raw, headers=CROSS_SITE, timeout=5)
            assert result.status == 403, (path, result.summary())
            assert error_code(result) == "origin_not_allowed"
        # The same body from a program that is not a browser: still not JSON, still no work.
        plain = {"Content-Type": "text/plain"}
        result = await stream_request(s.url + "/v1/chat/completions", raw, headers=plain)
        assert result.status == 415 and error_code(result) == "unsupported_media_type"
        assert s.fake.requests == 0


@pytest_twisted.ensureDeferred
async def test_a_rebound_host_cannot_read_models_running_or_logs() -> None:
    async with stack() as s:
        rebound = {"Host": f"attacker.example:{s.port}"}
        for path in ("/v1/models", "/running", "/logs/fake", "/health"):
            result = await stream_request(
                s.url + path, None, method="GET", headers=rebound, timeout=5
            )
            assert result.status == 421, (path, result.summary())
            assert error_code(result) == "host_not_allowed"
            assert b"fake" not in result.body
        result = await stream_request(
            s.url + "/v1/chat/completions", CHAT, headers=rebound, timeout=5
        )
        assert result.status == 421 and s.fake.requests == 0


@pytest_twisted.ensureDeferred
async def test_sdk_style_requests_still_work() -> None:
    import openai

    async with stack() as s:
        for base in (s.url, f"http://localhost:{s.port}"):
            result = await stream_request(base + "/v1/chat/completions", {**CHAT, "stream": True})
            assert result.outcome == "done", result.summary()
            models = await stream_request(base + "/v1/models", None, method="GET", timeout=5)
            assert models.status == 200

        def use_sdk() -> tuple[str, list[str]]:
            client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)
            reply = client.chat.completions.create(
                model="fake", messages=CHAT["messages"], max_tokens=3
            )
            return reply.choices[0].message.content or "", [m.id for m in client.models.list()]

        text, ids = await threads.deferToThread(use_sdk)
        assert text and "fake" in ids
        assert s.fake.requests == 3


@pytest_twisted.ensureDeferred
async def test_a_listed_origin_gets_cors_answers() -> None:
    page = "http://localhost:3000"
    async with stack(server_yaml=f"  cors_origins: ['{page}']") as s:
        preflight = await stream_request(
            s.url + "/v1/chat/completions",
            None,
            method="OPTIONS",
            headers={
                "Origin": page,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
            timeout=5,
        )
        assert preflight.status == 204, preflight.summary()
        assert preflight.headers["access-control-allow-origin"] == [page]
        assert "POST" in preflight.headers["access-control-allow-methods"][0]
        assert s.fake.requests == 0
        browser = {"Origin": page, "Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"}
        result = await stream_request(s.url + "/v1/chat/completions", CHAT, headers=browser)
        assert result.status == 200, result.summary()
        assert result.headers["access-control-allow-origin"] == [page]
        assert s.fake.requests == 1
        # Another page on the same machine is still refused.
        other = {**browser, "Origin": "http://localhost:3001"}
        result = await stream_request(s.url + "/v1/chat/completions", CHAT, headers=other)
        assert result.status == 403 and s.fake.requests == 1
