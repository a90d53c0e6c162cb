"""The official openai SDK talks to the fake (SDK runs in a thread; reactor keeps going)."""

from __future__ import annotations

from typing import Any

import openai
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from harness.fake_llama import FakeConfig, expected_text, start_fake_server

MESSAGES = [
    {"role": "system", "content": "you are terse"},
    {"role": "user", "content": "name some things"},
]


def _stream(base_url: str, **kw: Any) -> tuple[list[str], str | None, Any, str]:
    client: Any = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=10)
    stream = client.chat.completions.create(
        model="anything",
        messages=MESSAGES,
        stream=True,
        **kw,
    )
    pieces: list[str] = []
    finish = None
    usage = None
    model = ""
    for chunk in stream:
        model = chunk.model
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    return pieces, finish, usage, model


def _plain(base_url: str) -> tuple[str, str]:
    client: Any = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=10)
    res = client.chat.completions.create(model="anything", messages=MESSAGES)
    return res.choices[0].message.content or "", res.choices[0].finish_reason


@pytest_twisted.ensureDeferred
async def test_openai_sdk_streams_the_expected_text() -> None:
    server = await start_fake_server(
        FakeConfig(alias="fake-alias", seed=9, faults="token_delay=10ms"), reactor
    )
    try:
        base = server.url + "/v1"
        pieces, finish, usage, model = await deferToThread(
            _stream, base, max_tokens=6, stream_options={"include_usage": True}
        )
        body = {"messages": MESSAGES, "max_tokens": 6}
        tokens, expected_finish = expected_text(body, seed=9)
        assert pieces == tokens and finish == expected_finish == "length"
        assert usage is not None and usage.completion_tokens == 6 and usage.prompt_tokens == 8
        assert model == "fake-alias"

        pieces, finish, usage, _ = await deferToThread(_stream, base)
        assert (pieces, finish) == expected_text({"messages": MESSAGES}, seed=9)
        assert usage is None

        text, finish = await deferToThread(_plain, base)
        assert text == "".join(pieces) and finish == "stop"
    finally:
        await server.stop()
