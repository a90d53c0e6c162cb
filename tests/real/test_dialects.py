"""The OpenAI Responses and Anthropic Messages APIs through server_core, on the real
llama-server and the default chat model, spoken by the official SDKs.

The SDKs are what clients actually run: each parses the stream by its own API's rules
(the openai SDK reads Responses events by ``type``, the anthropic SDK raises on ``event:
error``), so these tests show that what server_core relays (and what it writes when the
upstream is lost) is understood as the API says, not only that it has the right shape.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from harness.client import stream_request
from tests.integration.test_managed import Managed, managed
from tests.polling import until
from tests.real.test_real import upstream_kwargs

pytestmark = pytest.mark.timeout(240)

QUESTION = "What is the capital of France? Answer in one sentence."
LONG = "Count from one to one hundred, writing every number out in words."
# One thread: llama.cpp's workers spin-wait, and two crawl on a busy 2-core machine.
ALIAS = ["--ctx-size", "2048", "-np", "2", "-t", "1"]
# Generation that never stops early, so a kill always lands in the middle of a stream.
ENDLESS = [*ALIAS, "--ignore-eos"]
SDK_TIMEOUT = 90.0
# The anthropic SDK (2.x) has no temperature argument; llama-server reads it from the body.
GREEDY = {"temperature": 0}
# A few tokens only, for each route's own name of the limit.
SHORT = {"/v1/responses": {"max_output_tokens": 3}, "/v1/messages": {"max_tokens": 3}}


@pytest.fixture
def real(llama_server: str, gguf: str) -> dict[str, Any]:
    """managed() arguments for the real llama-server with the default chat model."""
    return upstream_kwargs("real", llama_server, gguf)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def openai_client(base_url: str) -> Any:
    import openai

    return openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=SDK_TIMEOUT)


def anthropic_client(base_url: str) -> Any:
    import anthropic

    return anthropic.Anthropic(
        base_url=base_url, api_key="none", max_retries=0, timeout=SDK_TIMEOUT
    )


# -- 1. openai SDK: Responses (stream and whole), chat at /v1 and at the root -----------


def responses_stream(client: Any) -> tuple[list[Any], str]:
    """All events of one streamed Responses request, and its delta texts joined."""
    events = list(
        client.responses.create(
            model="m", input=QUESTION, max_output_tokens=24, temperature=0, stream=True
        )
    )
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas and all(deltas), [e.type for e in events]
    return events, "".join(deltas)


@pytest_twisted.ensureDeferred
async def test_openai_sdk_responses_stream_and_whole(tmp_path: Path, real: dict[str, Any]) -> None:
    async with managed(tmp_path, {"m": ALIAS}, **real) as m:

        def use_sdk() -> None:
            for base in (m.url + "/v1", m.url):  # /v1/responses and the root's /responses
                events, streamed = responses_stream(openai_client(base))
                types = [e.type for e in events]
                assert types[0] == "response.created", types
                assert types[-1] == "response.completed" and types.count(types[-1]) == 1
                assert "error" not in types
                final = events[-1].response
                assert final.status == "completed" and final.model == "m"
                assert final.output_text == streamed, (final.output_text, streamed)
                assert final.usage is not None and final.usage.input_tokens > 10
                assert "Paris" in streamed, streamed

            whole = openai_client(m.url + "/v1").responses.create(
                model="m", input=QUESTION, max_output_tokens=24, temperature=0
            )
            assert whole.status == "completed" and whole.model == "m"
            assert whole.output_text == streamed  # greedy: the stream says the same
            assert whole.usage is not None
            assert whole.usage.total_tokens == whole.usage.input_tokens + whole.usage.output_tokens

        await threads.deferToThread(use_sdk)


@pytest_twisted.ensureDeferred
async def test_openai_sdk_chat_stream_at_v1_and_at_the_root(
    tmp_path: Path, real: dict[str, Any]
) -> None:
    async with managed(tmp_path, {"m": ALIAS}, **real) as m:

        def use_sdk() -> list[str]:
            texts = []
            for base in (m.url + "/v1", m.url):
                stream = openai_client(base).chat.completions.create(
                    model="m", messages=user(QUESTION), max_tokens=24, temperature=0, seed=3,
                    stream=True,
                )  # fmt: skip
                chunks = list(stream)
                assert {c.model for c in chunks} == {"m"}
                finals = [c.choices[0].finish_reason for c in chunks if c.choices]
                assert finals[-1] in ("stop", "length")
                texts.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
            return texts

        at_v1, at_root = await threads.deferToThread(use_sdk)
        assert "Paris" in at_v1 and at_v1 == at_root


# -- 2. anthropic SDK: stream, whole, count_tokens, errors -------------------------------


@pytest_twisted.ensureDeferred
async def test_anthropic_sdk_messages(tmp_path: Path, real: dict[str, Any]) -> None:
    import anthropic

    async with managed(tmp_path, {"m": ALIAS}, **real) as m:

        def use_sdk() -> None:
            client = anthropic_client(m.url)
            with client.messages.stream(
                model="m", max_tokens=24, messages=user(QUESTION), extra_body=GREEDY
            ) as stream:
                streamed = "".join(stream.text_stream)
                final = stream.get_final_message()
            assert "Paris" in streamed, streamed
            assert final.stop_reason in ("end_turn", "max_tokens", "stop_sequence")
            assert prompt_tokens(final.usage) > 10 and final.usage.output_tokens > 0
            assert final.model == "m" and final.content[0].text == streamed

            whole = client.messages.create(
                model="m", max_tokens=24, messages=user(QUESTION), extra_body=GREEDY
            )
            assert whole.type == "message" and whole.role == "assistant" and whole.model == "m"
            assert whole.content[0].text == streamed  # greedy: the stream says the same
            assert whole.stop_reason == final.stop_reason
            # The second request reads the prompt from llama-server's cache; Anthropic's
            # usage counts those tokens apart (cache_read_input_tokens), but all of them.
            assert prompt_tokens(whole.usage) == prompt_tokens(final.usage)

            short = client.messages.count_tokens(model="m", messages=user(QUESTION))
            longer = client.messages.count_tokens(model="m", messages=user(QUESTION + " " + LONG))
            assert short.input_tokens > 10, short
            assert longer.input_tokens >= short.input_tokens + 10, (short, longer)

            with pytest.raises(anthropic.BadRequestError) as bad:
                client.messages.create(model="m", max_tokens=8, messages=[])
            assert bad.value.status_code == 400
            assert "messages" in anthropic_error(bad.value.body, "invalid_request_error")

            for call in (
                lambda: client.messages.create(model="nope", max_tokens=8, messages=user("Hi")),
                lambda: client.messages.count_tokens(model="nope", messages=user("Hi")),
            ):
                with pytest.raises(anthropic.NotFoundError) as missing:
                    call()
                assert "nope" in anthropic_error(missing.value.body, "not_found_error")

        await threads.deferToThread(use_sdk)


def prompt_tokens(usage: Any) -> int:
    """All prompt tokens of an Anthropic usage: the uncached and the cached ones."""
    return int(usage.input_tokens) + int(usage.cache_read_input_tokens or 0)


def anthropic_error(body: Any, kind: str) -> str:
    """The message of ``body``, which must be an Anthropic error body of type ``kind``."""
    assert isinstance(body, dict) and body.get("type") == "error", body
    error = body["error"]
    assert error["type"] == kind and isinstance(error["message"], str) and error["message"]
    assert set(body) == {"type", "error"}, body  # not OpenAI's {"error": {...}} besides
    return str(error["message"])


# -- 4. no model named: the default model serves ----------------------------------------


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/v1/responses", {"input": "Say hi.", "max_output_tokens": 6}),
        ("/v1/messages", {"messages": user("Say hi."), "max_tokens": 6}),
    ],
    ids=["responses", "messages"],
)
@pytest_twisted.ensureDeferred
async def test_a_request_without_model_is_served_by_the_default_model(
    tmp_path: Path, real: dict[str, Any], path: str, payload: dict[str, Any]
) -> None:
    async with managed(tmp_path, {"m": ALIAS}, **real) as m:
        whole = await stream_request(m.url + path, payload, timeout=90)
        assert whole.status == 200 and whole.outcome == "done", whole.summary()
        assert whole.json_body["model"] == "m", whole.json_body
        assert whole.json_body["usage"]["input_tokens"] > 0
        streamed = await stream_request(m.url + path, {**payload, "stream": True}, timeout=90)
        assert streamed.status == 200 and streamed.outcome == "done", streamed.summary()
        assert streamed.text.strip(), streamed.summary()


# -- 5. honest ending when the llama-server dies mid-stream -----------------------------


async def warm_pid(m: Managed) -> int:
    """Load the alias with one short request; the pid of its llama-server."""
    warm = await stream_request(
        m.url + "/v1/chat/completions",
        {"model": "m", "messages": user("Hi"), "max_tokens": 2},
        timeout=90,
    )
    assert warm.outcome == "done", warm.summary()
    (entry,) = m.context.running()
    return int(entry["pid"])


def killer(pid: int, after: int) -> Callable[[], None]:
    """A callback that SIGKILLs ``pid`` on its ``after``-th call."""
    calls = 0

    def tick() -> None:
        nonlocal calls
        calls += 1
        if calls == after:
            os.kill(pid, signal.SIGKILL)

    return tick


def responses_killed_mid_stream(base: str, pid: int) -> None:
    """The openai SDK sees the stream end with an error event, never response.completed."""
    kill = killer(pid, 3)
    types = []
    stream = openai_client(base).responses.create(
        model="m", input=LONG, max_output_tokens=400, temperature=0, stream=True
    )
    for event in stream:
        types.append(event.type)
        if event.type == "response.output_text.delta":
            kill()
        if event.type == "error":
            error = event
    assert types.count("response.output_text.delta") >= 3, types
    assert types[-1] == "error" and "response.completed" not in types, types
    assert error.message and "'m'" in error.message, error
    assert error.code and error.sequence_number is not None, error


def messages_killed_mid_stream(base: str, pid: int) -> None:
    """The anthropic SDK raises from the stream; it never sees message_stop."""
    import anthropic

    kill = killer(pid, 3)
    types = []
    with pytest.raises(anthropic.APIStatusError) as lost:
        with anthropic_client(base).messages.stream(
            model="m", max_tokens=400, messages=user(LONG), extra_body=GREEDY
        ) as stream:
            for event in stream:
                types.append(event.type)
                if event.type == "content_block_delta":
                    kill()
    assert types.count("content_block_delta") >= 3, types
    assert "message_stop" not in types and "message_delta" not in types, types
    assert "'m'" in anthropic_error(lost.value.body, "api_error")


@pytest.mark.parametrize(
    "speak",
    [responses_killed_mid_stream, messages_killed_mid_stream],
    ids=["responses", "messages"],
)
@pytest_twisted.ensureDeferred
async def test_llama_server_killed_mid_stream_is_an_error_in_the_api_s_own_shape(
    tmp_path: Path, real: dict[str, Any], speak: Callable[[str, int], None]
) -> None:
    async with managed(tmp_path, {"m": ENDLESS}, **real) as m:
        pid = await warm_pid(m)
        await threads.deferToThread(speak, m.url, pid)
        await until(lambda: not m.context.is_loaded("m"), timeout=10)
        # The next request starts a new llama-server and completes.
        again = await stream_request(
            m.url + "/v1/messages",
            {"model": "m", "messages": user("Hi"), "max_tokens": 3, "stream": True},
            timeout=90,
        )
        assert again.outcome == "done", again.summary()
        assert m.context.starts == 2


@pytest_twisted.ensureDeferred
async def test_native_completion_stream_killed_mid_stream_ends_with_one_error_event(
    tmp_path: Path, real: dict[str, Any]
) -> None:
    # tests/real/test_native.py covers the complete native stream; this is its loss.
    async with managed(tmp_path, {"m": ENDLESS}, **real) as m:
        pid = await warm_pid(m)
        kill = killer(pid, 3)
        result = await stream_request(
            m.url + "/completion",
            {"model": "m", "prompt": LONG, "n_predict": 400, "stream": True},
            timeout=90,
            on_event=lambda event, t: kill(),
        )
        assert result.dialect == "native"
        assert result.outcome == "error_event", result.summary()
        assert not result.done_after_error and not result.after_error
        assert result.error is not None and "'m'" in result.error["message"]
        assert result.n_events >= 4  # three tokens, then the error


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/v1/responses", {"input": LONG, "max_output_tokens": 400}),
        ("/v1/messages", {"messages": user(LONG), "max_tokens": 400}),
    ],
    ids=["responses", "messages"],
)
@pytest_twisted.ensureDeferred
async def test_a_client_that_leaves_mid_stream_cancels_the_generation(
    tmp_path: Path, real: dict[str, Any], path: str, payload: dict[str, Any]
) -> None:
    async with managed(tmp_path, {"m": ENDLESS}, **real) as m:
        await warm_pid(m)
        left = await stream_request(
            m.url + path, {"model": "m", "stream": True, **payload}, timeout=90, disconnect_after=3
        )
        assert left.outcome == "disconnected", left.summary()
        process = m.context.process_for("m")
        # llama-server logs the cancel when its connection to server_core is closed; an
        # ignored disconnect would generate all 400 tokens (seconds) for nobody.
        await until(lambda: any("cancel task" in ln for ln in process.recent_logs()), timeout=5)
        again = await stream_request(
            m.url + path, {"model": "m", "stream": True, **payload, **SHORT[path]}, timeout=90
        )
        assert again.outcome == "done", again.summary()
        assert m.context.starts == 1


# -- count_tokens is validated like the Messages request it counts ----------------------

_MISSING = object()


@pytest.mark.parametrize("messages", [_MISSING, [], "hello"], ids=["missing", "empty", "string"])
@pytest_twisted.ensureDeferred
async def test_count_tokens_refuses_the_messages_that_messages_refuses(
    tmp_path: Path, real: dict[str, Any], messages: Any
) -> None:
    body: dict[str, Any] = {"model": "m"}
    if messages is not _MISSING:
        body["messages"] = messages
    async with managed(tmp_path, {"m": ALIAS}, **real) as m:
        refused = await stream_request(
            m.url + "/v1/messages", {**body, "max_tokens": 4}, timeout=90
        )
        assert refused.status == 400, refused.summary()  # what count_tokens must match
        assert anthropic_error(json.loads(refused.body or b""), "invalid_request_error")
        counted = await stream_request(m.url + "/v1/messages/count_tokens", body, timeout=90)
        assert counted.status == 400, counted.summary()
        assert anthropic_error(json.loads(counted.body or b""), "invalid_request_error")
