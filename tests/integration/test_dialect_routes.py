"""Responses and Anthropic Messages through server_core in front of the fake llama-server.

Real sockets both ways. Each stream must end by its own dialect's rules: complete with
its own last event, or (upstream lost, erroring, malformed) one error event in its own
shape, never a completion that did not happen. The openai and anthropic SDKs read them
as their users' programs do.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest
import pytest_twisted
import treq
from twisted.internet import threads

from server_core.sse import Event, decode_all
from server_core.sse.dialects import MESSAGES, RESPONSES, Frame, StreamDialect
from tests.integration.stack import reactor, stack

pytestmark = pytest.mark.timeout(60)

RESPONSES_BODY = {"model": "fake", "input": "hello there", "max_output_tokens": 8}
MESSAGES_BODY = {
    "model": "fake",
    "max_tokens": 8,
    "messages": [{"role": "user", "content": "hello there"}],
}
CASES = {"responses": ("/v1/responses", RESPONSES_BODY, RESPONSES),
         "messages": ("/v1/messages", MESSAGES_BODY, MESSAGES)}  # fmt: skip


async def post(url: str, body: Any, fault: str | None = None) -> tuple[int, bytes, Any]:
    headers = {"content-type": "application/json"}
    if fault:
        headers["X-Fault"] = fault
    response = await treq.post(url, json.dumps(body).encode(), headers=headers, reactor=reactor)
    return response.code, await response.content(), response.headers


def frames(raw: bytes, dialect: StreamDialect) -> list[tuple[Frame, Any, Event]]:
    out = []
    for item in decode_all(raw):
        if isinstance(item, Event):
            kind, payload = dialect.read(item)
            out.append((kind, payload, item))
    return out


def text_of(events: list[tuple[Frame, Any, Event]]) -> str:
    parts = []
    for _, payload, event in events:
        if not isinstance(payload, dict):
            continue
        if event.event == "response.output_text.delta":
            parts.append(payload["delta"])
        delta = payload.get("delta")
        if event.event == "content_block_delta" and isinstance(delta, dict):
            parts.append(delta.get("text", ""))
    return "".join(parts)


def whole_text(name: str, document: dict[str, Any]) -> str:
    if name == "responses":
        (message,) = [o for o in document["output"] if o["type"] == "message"]
        return "".join(part["text"] for part in message["content"])
    return "".join(block["text"] for block in document["content"] if block["type"] == "text")


@pytest.mark.parametrize("name", sorted(CASES))
@pytest_twisted.ensureDeferred
async def test_complete_stream_and_whole_answer_agree(name: str) -> None:
    path, body, dialect = CASES[name]
    async with stack() as s:
        status, raw, _ = await post(s.url + path, body)
        assert status == 200, raw
        document = json.loads(raw)
        assert document["model"] == "fake"
        status, raw, headers = await post(s.url + path, {**body, "stream": True})
        assert status == 200
        assert headers.getRawHeaders(b"content-type")[0].startswith(b"text/event-stream")
        got = frames(raw, dialect)
        kinds = [kind for kind, _, _ in got]
        assert kinds[-1] is Frame.COMPLETE and kinds.count(Frame.COMPLETE) == 1, raw
        assert Frame.ERROR not in kinds and b"[DONE]" not in raw
        assert text_of(got) == whole_text(name, document) != ""


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("fault", ["reset_after=2", "close_after=2", "error_after=2",
                                   "malformed_after=2"])  # fmt: skip
@pytest_twisted.ensureDeferred
async def test_a_broken_upstream_stream_ends_with_one_error_event_of_its_dialect(
    name: str, fault: str
) -> None:
    path, body, dialect = CASES[name]
    async with stack() as s:
        status, raw, _ = await post(s.url + path, {**body, "stream": True}, fault)
        assert status == 200
        got = frames(raw, dialect)
        kinds = [kind for kind, _, _ in got]
        assert kinds == [Frame.DATA, Frame.DATA, Frame.ERROR], (fault, raw)
        _, payload, event = got[-1]
        assert event.event == "error"
        if dialect is MESSAGES:
            assert payload["type"] == "error" and payload["error"]["type"] == "api_error"
            assert payload["error"]["message"]
        else:
            assert payload["type"] == "error" and payload["message"]
            assert payload["sequence_number"] == 2
        # A client that keeps its connection learns the same: the stream is over.
        status, raw, _ = await post(s.url + path, {**body, "stream": True})
        assert frames(raw, dialect)[-1][0] is Frame.COMPLETE


@pytest_twisted.ensureDeferred
async def test_openai_sdk_responses_stream_through_server_core() -> None:
    async with stack() as s:

        def run(fault: str | None) -> tuple[list[str], str | None]:
            client = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
            extra = {"X-Fault": fault} if fault else None
            types: list[str] = []
            text = None
            with client.responses.create(
                model="fake", input="hello", max_output_tokens=8, stream=True,
                extra_headers=extra,
            ) as stream:  # fmt: skip
                for event in stream:
                    types.append(event.type)
                    if event.type == "response.completed":
                        text = event.response.output_text
            return types, text

        types, text = await threads.deferToThread(run, None)
        assert types[0] == "response.created" and types[-1] == "response.completed"
        assert text
        types, text = await threads.deferToThread(run, "reset_after=3")
        assert types[-1] == "error" and "response.completed" not in types and text is None


@pytest_twisted.ensureDeferred
async def test_anthropic_sdk_messages_stream_through_server_core() -> None:
    async with stack() as s:

        def run(fault: str | None) -> str:
            client = anthropic.Anthropic(base_url=s.url, api_key="x", max_retries=0)
            extra = {"X-Fault": fault} if fault else None
            with client.messages.stream(
                model="fake", max_tokens=8, messages=[{"role": "user", "content": "hello"}],
                extra_headers=extra,
            ) as stream:  # fmt: skip
                text = "".join(stream.text_stream)
                final = stream.get_final_message()
            assert final.stop_reason is not None
            return text

        text = await threads.deferToThread(run, None)
        assert text
        with pytest.raises(anthropic.APIStatusError) as caught:
            await threads.deferToThread(run, "reset_after=3")
        assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]


@pytest_twisted.ensureDeferred
async def test_anthropic_sdk_errors_before_the_first_byte_are_its_own_shape() -> None:
    async with stack() as s:

        def run() -> None:
            client = anthropic.Anthropic(base_url=s.url, api_key="x", max_retries=0)
            client.messages.create(model="nope", max_tokens=8, messages=[
                {"role": "user", "content": "hello"}])  # fmt: skip

        with pytest.raises(anthropic.NotFoundError) as caught:
            await threads.deferToThread(run)
        assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
        assert "nope" in caught.value.body["error"]["message"]  # type: ignore[index]
