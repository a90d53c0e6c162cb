"""First contact: `twistd -n server-core` on its embedded default, as a new user runs it.

No --config: the two default aliases on the real llama-server. The chat model answers the
question asked (through raw HTTP and the openai SDK), the completion model completes, and
with ``max_loaded: 1`` switching between them is a swap that never answers with the other.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from harness.client import StreamResult, stream_request
from server_core.config import COMPLETION_MODEL_ALIAS, DEFAULT_MODEL_ALIAS
from tests.integration.procs import Child, free_port, spawn

pytestmark = pytest.mark.timeout(240)

QUESTION = "What is the capital of France? Answer in one sentence."


@asynccontextmanager
async def default_server(tmp_path: Path) -> AsyncIterator[str]:
    port = free_port()
    listen = f"tcp:{port}:interface=127.0.0.1"
    argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "server-core", "--port", listen]  # fmt: skip
    server: Child = spawn("twistd", argv, env={"XDG_RUNTIME_DIR": str(tmp_path)})
    try:
        await server.when_line(r"server-core listening on http://", timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        assert await server.stop() == 0, "\n".join(server.lines[-30:])


async def ask(url: str, *, stream: bool, model: str = DEFAULT_MODEL_ALIAS) -> StreamResult:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": QUESTION}],
        "temperature": 0,
        "stream": stream,
    }
    result = await stream_request(url + "/v1/chat/completions", body, timeout=120)
    assert result.outcome == "done", result.summary()
    return result


async def running(url: str) -> dict[str, dict[str, Any]]:
    result = await stream_request(url + "/running", None, method="GET", timeout=10)
    return {entry["alias"]: entry for entry in result.json_body["data"]}


@pytest_twisted.ensureDeferred
async def test_the_embedded_default_answers_and_swaps(tmp_path: Path, llama_server: str) -> None:
    import openai

    async with default_server(tmp_path) as url:
        models = await stream_request(url + "/v1/models", None, method="GET", timeout=10)
        ids = [m["id"] for m in models.json_body["data"]]
        assert ids == [DEFAULT_MODEL_ALIAS, COMPLETION_MODEL_ALIAS]

        for stream in (True, False):
            result = await ask(url, stream=stream)
            assert "Paris" in result.text and result.model == DEFAULT_MODEL_ALIAS, result.text

        def use_sdk() -> str:
            client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
            reply = client.chat.completions.create(
                model=DEFAULT_MODEL_ALIAS,
                messages=[{"role": "user", "content": QUESTION}],
                temperature=0,
            )
            return reply.choices[0].message.content or ""

        assert "Paris" in await threads.deferToThread(use_sdk)
        state = await running(url)
        assert state[DEFAULT_MODEL_ALIAS]["chat_template"] == "ok"

        # The completion model: a swap (max_loaded 1), and a completion of the text sent.
        completion = await stream_request(
            url + "/v1/completions",
            {"model": COMPLETION_MODEL_ALIAS, "prompt": "The capital of France is",
             "max_tokens": 8, "temperature": 0},
            timeout=120,
        )  # fmt: skip
        assert completion.status == 200 and completion.outcome == "done", completion.summary()
        assert completion.json_body["model"] == COMPLETION_MODEL_ALIAS
        assert completion.text.strip()
        state = await running(url)
        assert list(state) == [COMPLETION_MODEL_ALIAS]
        assert state[COMPLETION_MODEL_ALIAS]["chat_template"] == "ok"  # --no-jinja gemma works

        # Chat on the base model goes through its (working) gemma template too.
        gemma_chat = await ask(url, stream=True, model=COMPLETION_MODEL_ALIAS)
        assert gemma_chat.model == COMPLETION_MODEL_ALIAS

        # And back: the chat model is started again and still answers.
        back = await ask(url, stream=True)
        assert "Paris" in back.text
        assert list(await running(url)) == [DEFAULT_MODEL_ALIAS]
