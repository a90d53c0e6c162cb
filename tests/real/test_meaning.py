"""The prompt reaches the model: meaning, not only shape.

A server whose chat template dropped the conversation passed every shape check this
project had: the stream was complete, the JSON well formed, the reply fluent, and about
nothing the client asked. These tests ask what only a model that saw the prompt can get
right, through server_core, on the real llama-server with the default chat model, and
where the fake can show it too (its text is deterministic, its prompt tokens are the
rendered conversation), on the fake.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from harness.client import StreamResult, stream_request
from tests.integration.test_managed import Managed, managed
from tests.real.test_real import upstream_kwargs

pytestmark = pytest.mark.timeout(180)

QUESTION = "What is the capital of France? Answer in one sentence."
ALIAS = ["--ctx-size", "2048", "-np", "2"]


@pytest.fixture(params=["fake", "real"])
def upstream(request: pytest.FixtureRequest) -> dict[str, Any]:
    """managed() arguments for the fake or the real llama-server with the chat model."""
    if request.param == "fake":
        return {}
    return upstream_kwargs(
        "real", request.getfixturevalue("llama_server"), request.getfixturevalue("gguf")
    )


def ask(messages: list[dict[str, str]], *, stream: bool, **extra: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": messages,
        "max_tokens": 24,
        "temperature": 0,
        "seed": 7,
        "stream": stream,
        **({"stream_options": {"include_usage": True}} if stream else {}),
        **extra,
    }


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def chat(m: Managed, payload: dict[str, Any]) -> StreamResult:
    result = await stream_request(m.url + "/v1/chat/completions", payload, timeout=90)
    assert result.outcome == "done", result.summary()
    return result


def prompt_tokens(result: StreamResult) -> int:
    usage = result.usage or (result.json_body or {}).get("usage")
    assert usage, result.summary()
    return int(usage["prompt_tokens"])


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest_twisted.ensureDeferred
async def test_prompt_tokens_count_what_was_sent(
    tmp_path: Path, upstream: dict[str, Any], stream: bool
) -> None:
    async with managed(tmp_path, {"m": ALIAS}, **upstream) as m:
        short = prompt_tokens(await chat(m, ask(user(QUESTION), stream=stream)))
        longer = prompt_tokens(
            await chat(
                m, ask(user(QUESTION + " Then name its river and one museum."), stream=stream)
            )
        )
        assert longer >= short + 5, (short, longer)
        # A system message reaches the model: a longer one costs more prompt tokens.
        brief = [{"role": "system", "content": "Be brief."}, *user(QUESTION)]
        wordy = [
            {"role": "system", "content": "Be brief, polite, exact, and answer like a "
             "geography teacher who loves short sentences and capital cities."},
            *user(QUESTION),
        ]  # fmt: skip
        with_brief = prompt_tokens(await chat(m, ask(brief, stream=stream)))
        with_wordy = prompt_tokens(await chat(m, ask(wordy, stream=stream)))
        assert with_wordy >= with_brief + 10, (with_brief, with_wordy)
        # Every turn of a conversation reaches it.
        two_turns = [
            *user("Name a country in Europe."),
            {"role": "assistant", "content": "France is a country in Europe."},
            *user(QUESTION),
        ]
        assert prompt_tokens(await chat(m, ask(two_turns, stream=stream))) >= short + 10


@pytest_twisted.ensureDeferred
async def test_same_request_at_temperature_zero_with_a_seed_gives_the_same_text(
    tmp_path: Path, upstream: dict[str, Any]
) -> None:
    async with managed(tmp_path, {"m": ALIAS}, **upstream) as m:
        first = await chat(m, ask(user(QUESTION), stream=True))
        again = await chat(m, ask(user(QUESTION), stream=True))
        whole = await chat(m, ask(user(QUESTION), stream=False))
        assert first.text.strip()
        assert first.text == again.text == whole.text


# -- real only: what only a model that saw the question gets right -----------------------


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest_twisted.ensureDeferred
async def test_a_known_question_gets_its_known_answer(
    tmp_path: Path, llama_server: str, gguf: str, stream: bool
) -> None:
    async with managed(tmp_path, {"m": ALIAS}, **upstream_kwargs("real", llama_server, gguf)) as m:
        result = await chat(m, ask(user(QUESTION), stream=stream))
        assert "Paris" in result.text, result.text
        other = await chat(m, ask(user("What is the capital of Italy? Answer in one sentence."),
                                  stream=stream))  # fmt: skip
        assert "Rome" in other.text and "Paris" not in other.text, other.text


@pytest_twisted.ensureDeferred
async def test_the_openai_sdk_gets_the_answer(tmp_path: Path, llama_server: str, gguf: str) -> None:
    import openai

    async with managed(tmp_path, {"m": ALIAS}, **upstream_kwargs("real", llama_server, gguf)) as m:

        def use_sdk() -> tuple[str, str, int]:
            client = openai.OpenAI(base_url=m.url + "/v1", api_key="none", max_retries=0)
            stream = client.chat.completions.create(
                model="m", messages=user(QUESTION), temperature=0, seed=3, stream=True,  # type: ignore[arg-type]
            )  # fmt: skip
            streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            whole = client.chat.completions.create(
                model="m",
                messages=user(QUESTION),
                temperature=0,
                seed=3,  # type: ignore[arg-type]
            )
            assert whole.usage is not None
            return streamed, whole.choices[0].message.content or "", whole.usage.prompt_tokens

        streamed, whole, tokens = await threads.deferToThread(use_sdk)
        assert "Paris" in streamed and streamed == whole
        assert tokens > 10


# -- a template that drops the messages is never answered silently ---------------------


@pytest_twisted.ensureDeferred
async def test_an_alias_whose_template_drops_the_messages_is_reported_and_refused(
    tmp_path: Path, upstream: dict[str, Any]
) -> None:
    # With Jinja on (the default), --chat-template NAME is template text: "gemma" alone.
    broken = [*ALIAS, "--chat-template", "gemma"]
    async with managed(tmp_path, {"m": broken}, **upstream) as m:
        refused = await stream_request(
            m.url + "/v1/chat/completions", ask(user(QUESTION), stream=True), timeout=90
        )
        assert refused.status == 500, refused.summary()
        assert refused.error is not None
        assert refused.error["code"] == "chat_template_drops_messages"
        assert "'m'" in refused.error["message"]
        running = await stream_request(m.url + "/running", None, method="GET", timeout=10)
        (entry,) = running.json_body["data"]
        assert entry["state"] == "ready" and entry["chat_template"] == "drops_messages"
        assert '"gemma"' in entry["chat_template_detail"]
        assert "--no-jinja --chat-template NAME" in entry["chat_template_detail"]
        # Text completions do not use the template: they still work.
        completion = await stream_request(
            m.url + "/v1/completions",
            {"model": "m", "prompt": "The capital of France is", "max_tokens": 4,
             "temperature": 0},
            timeout=90,
        )  # fmt: skip
        assert completion.status == 200 and completion.outcome == "done", completion.summary()
        assert m.context.starts == 1  # one probe per start; the refusal restarts nothing


@pytest_twisted.ensureDeferred
async def test_a_builtin_template_name_with_jinja_off_carries_the_messages(
    tmp_path: Path, upstream: dict[str, Any]
) -> None:
    fixed = [*ALIAS, "--no-jinja", "--chat-template", "chatml"]
    async with managed(tmp_path, {"m": fixed}, **upstream) as m:
        short = prompt_tokens(await chat(m, ask(user(QUESTION), stream=False)))
        longer = prompt_tokens(await chat(m, ask(user(QUESTION + " " + QUESTION), stream=False)))
        assert longer >= short + 8
        (entry,) = m.context.running()
        assert entry["chat_template"] == "ok"
