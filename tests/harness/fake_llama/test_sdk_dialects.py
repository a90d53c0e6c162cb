"""The official SDKs' Responses and Messages clients against the fake (SDK in a thread)."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from harness.fake_llama import FakeConfig, FakeServer, expected_text, start_fake_server
from tests.harness.fake_llama._dialects import CHAT_BODY, SYSTEM, USER

TEXT = "".join(expected_text(CHAT_BODY, seed=4)[0])


async def _start(faults: str = "") -> FakeServer:
    return await start_fake_server(FakeConfig(alias="fake", seed=4, faults=faults), reactor)


def _openai(server: FakeServer) -> Any:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=10)


def _responses_stream(server: FakeServer) -> tuple[str, Any]:
    stream = _openai(server).responses.create(
        model="m", instructions=SYSTEM, input=USER, max_output_tokens=4, stream=True
    )
    deltas, final = [], None
    for event in stream:
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        elif event.type == "response.completed":
            final = event.response
    return "".join(deltas), final


def _responses_plain(server: FakeServer) -> Any:
    return _openai(server).responses.create(
        model="m", instructions=SYSTEM, input=USER, max_output_tokens=4
    )


@pytest_twisted.ensureDeferred
async def test_openai_responses_stream_and_create() -> None:
    server = await _start("token_delay=5ms")
    try:
        text, final = await deferToThread(_responses_stream, server)
        assert text == TEXT and final is not None and final.output_text == TEXT
        assert final.id.startswith("resp_") and final.status == "completed"
        assert final.usage.output_tokens == 4 and final.model == "fake"
        plain = await deferToThread(_responses_plain, server)
        assert plain.output_text == TEXT and plain.usage.output_tokens == 4
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_openai_responses_stream_error_after_raises() -> None:
    server = await _start("error_after=5")
    try:
        with pytest.raises(openai.APIError, match="error_after=5"):
            await deferToThread(_responses_stream, server)
    finally:
        await server.stop()


def _anthropic(server: FakeServer) -> Any:
    return anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0, timeout=10)


def _messages_stream(server: FakeServer) -> tuple[str, Any]:
    with _anthropic(server).messages.stream(
        model="m", system=SYSTEM, messages=[{"role": "user", "content": USER}], max_tokens=4
    ) as stream:
        text = "".join(stream.text_stream)
        return text, stream.get_final_message()


def _messages_plain(server: FakeServer) -> Any:
    return _anthropic(server).messages.create(
        model="m", system=SYSTEM, messages=[{"role": "user", "content": USER}], max_tokens=4
    )


def _count(server: FakeServer) -> Any:
    return _anthropic(server).messages.count_tokens(
        model="m", system=SYSTEM, messages=[{"role": "user", "content": USER}]
    )


@pytest_twisted.ensureDeferred
async def test_anthropic_messages_stream_create_and_count() -> None:
    server = await _start("token_delay=5ms")
    try:
        text, final = await deferToThread(_messages_stream, server)
        assert text == TEXT and final.content[0].text == TEXT
        assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 4
        plain = await deferToThread(_messages_plain, server)
        assert plain.content[0].text == TEXT and plain.model == "fake"
        counted = await deferToThread(_count, server)
        assert counted.input_tokens == plain.usage.input_tokens == 7
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_anthropic_stream_error_after_raises() -> None:
    server = await _start("error_after=4")
    try:
        with pytest.raises(anthropic.APIStatusError):
            await deferToThread(_messages_stream, server)
    finally:
        await server.stop()
