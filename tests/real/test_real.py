"""Client-side assertions that must hold for the fake and the real llama-server alike,
plus what only the real one can show. server_core manages both as child processes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, threads

from harness.client import StreamResult, stream_request
from tests.integration.test_managed import Managed, managed
from tests.polling import until

pytestmark = pytest.mark.timeout(120)


def upstream_kwargs(kind: str, llama_server: str, gguf: str) -> dict[str, Any]:
    if kind == "real":
        return {"executable": llama_server, "model": gguf, "start_timeout": 60}
    return {}


@pytest.fixture(params=["fake", "real"])
def upstream(request: pytest.FixtureRequest) -> dict[str, Any]:
    """managed() arguments for the fake or the real llama-server (same assertions)."""
    if request.param == "fake":
        return {}
    return upstream_kwargs(
        "real", request.getfixturevalue("llama_server"), request.getfixturevalue("gguf")
    )


def body(model: str, max_tokens: int = 8, stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello in three words."}],
        "max_tokens": max_tokens,
        "stream": stream,
        "temperature": 0,
        "seed": 42,
        **extra,
    }


async def chat(m: Managed, payload: dict[str, Any], **kw: Any) -> StreamResult:
    return await stream_request(m.url + "/v1/chat/completions", payload, timeout=60, **kw)


ALIAS = ["--ctx-size", "1024", "-np", "2"]


@pytest_twisted.ensureDeferred
async def test_stream_shape(tmp_path: Path, upstream: dict[str, Any]) -> None:
    async with managed(tmp_path, {"m": ALIAS}, **upstream) as m:
        result = await chat(m, body("m", stream_options={"include_usage": True}))
        assert result.outcome == "done", result.summary()
        assert result.headers["content-type"][0].startswith("text/event-stream")
        first = result.chunks[0]
        assert first["choices"][0]["delta"].get("role") == "assistant"
        assert len(result.ids) == 1 and result.model == "m"
        assert all(c["object"] == "chat.completion.chunk" for c in result.chunks)
        finals = [c for c in result.chunks if c["choices"] and c["choices"][0].get("finish_reason")]
        assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] in ("stop", "length")
        usage = result.chunks[-1]
        assert usage["choices"] == [] and usage["usage"]["completion_tokens"] >= 1
        assert result.text.strip()


@pytest_twisted.ensureDeferred
async def test_non_stream_and_length(tmp_path: Path, upstream: dict[str, Any]) -> None:
    async with managed(tmp_path, {"m": ALIAS}, **upstream) as m:
        result = await chat(m, body("m", max_tokens=3, stream=False))
        assert result.outcome == "done" and result.status == 200
        doc = result.json_body
        assert doc["object"] == "chat.completion" and doc["model"] == "m"
        assert doc["choices"][0]["message"]["role"] == "assistant"
        assert doc["choices"][0]["finish_reason"] == "length"
        assert doc["usage"]["completion_tokens"] == 3


@pytest_twisted.ensureDeferred
async def test_models_and_errors(tmp_path: Path, upstream: dict[str, Any]) -> None:
    async with managed(tmp_path, {"m": ALIAS}, **upstream) as m:
        models = await stream_request(m.url + "/v1/models", None, method="GET", timeout=10)
        assert [d["id"] for d in models.json_body["data"]] == ["m"]
        bad = await chat(m, {**body("m"), "messages": "hi"})
        assert bad.status == 400 and bad.error["param"] == "messages"
        # An upstream's own 400 (context too long) is relayed as a 400 with its counts.
        huge = await chat(m, body("m", stream=False, messages=[
            {"role": "user", "content": "word " * 3000}]))  # fmt: skip
        assert huge.status == 400, huge.summary()
        assert huge.error["type"] == "exceed_context_size_error"


@pytest_twisted.ensureDeferred
async def test_child_killed_mid_stream(tmp_path: Path, upstream: dict[str, Any]) -> None:
    async with managed(tmp_path, {"m": ALIAS}, **upstream) as m:
        assert (await chat(m, body("m", max_tokens=2))).outcome == "done"
        (entry,) = m.context.running()
        seen = 0

        def on_event(event: Any, t: float) -> None:
            nonlocal seen
            seen += 1
            if seen == 3:
                os.kill(entry["pid"], signal.SIGKILL)

        result = await chat(m, body("m", max_tokens=200, ignore_eos=True), on_event=on_event)
        assert result.outcome == "error_event", result.summary()
        assert not result.done_after_error
        await until(lambda: not m.context.is_loaded("m"), timeout=5)
        again = await chat(m, body("m", max_tokens=2))
        assert again.outcome == "done"
        assert m.context.starts == 2


@pytest_twisted.ensureDeferred
async def test_client_disconnect_cancels_generation(
    tmp_path: Path, upstream: dict[str, Any]
) -> None:
    async with managed(tmp_path, {"m": ALIAS}, **upstream) as m:
        result = await chat(m, body("m", max_tokens=300, ignore_eos=True), disconnect_after=3)
        assert result.outcome == "disconnected"
        process = m.context.process_for("m")

        def cancelled() -> bool:
            return any("cancel" in line for line in process.recent_logs())

        await until(cancelled, timeout=5)


# -- real only ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_openai_sdk_through_server_core(tmp_path: Path, llama_server: str, gguf: str) -> None:
    import openai

    async with managed(
        tmp_path, {"gemma": ALIAS}, **upstream_kwargs("real", llama_server, gguf)
    ) as m:

        def use_sdk() -> tuple[str, str]:
            client = openai.OpenAI(base_url=m.url + "/v1", api_key="none", max_retries=0)
            messages = body("gemma")["messages"]
            stream = client.chat.completions.create(
                model="gemma", messages=messages, max_tokens=12, temperature=0, seed=1,
                stream=True,
            )  # fmt: skip
            streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            whole = client.chat.completions.create(
                model="gemma", messages=messages, max_tokens=12, temperature=0, seed=1
            )
            return streamed, whole.choices[0].message.content or ""

        streamed, whole = await threads.deferToThread(use_sdk)
        assert streamed.strip() and streamed == whole


@pytest_twisted.ensureDeferred
async def test_swap_between_two_aliases_of_one_gguf(
    tmp_path: Path, llama_server: str, gguf: str
) -> None:
    aliases = {"small": ["--ctx-size", "512"], "large": ["--ctx-size", "2048"]}
    async with managed(
        tmp_path, aliases, max_loaded=1, **upstream_kwargs("real", llama_server, gguf)
    ) as m:
        for name in ("small", "large", "small"):
            result = await chat(m, body(name, max_tokens=2))
            assert result.outcome == "done" and result.model == name
            (entry,) = m.context.running()
            assert entry["alias"] == name
            props = await stream_request(
                f"http://127.0.0.1:{entry['port']}/props", None, method="GET", timeout=10
            )
            n_ctx = props.json_body["default_generation_settings"]["n_ctx"]
            assert n_ctx == (512 if name == "small" else 2048)
        assert m.context.starts == 3


@pytest_twisted.ensureDeferred
async def test_embeddings_alias(tmp_path: Path, llama_server: str, gguf: str) -> None:
    async with managed(
        tmp_path, {"emb": ["--embeddings", "--pooling", "mean", "--ctx-size", "512"]},
        **upstream_kwargs("real", llama_server, gguf),
    ) as m:  # fmt: skip
        result = await stream_request(
            m.url + "/v1/embeddings", {"model": "emb", "input": ["hello", "world"]}, timeout=60
        )
        assert result.status == 200, result.summary()
        data = result.json_body["data"]
        assert len(data) == 2 and len(data[0]["embedding"]) > 100
        assert data[0]["embedding"] != data[1]["embedding"]
        assert json.dumps(result.json_body).count("embedding") >= 2


@pytest_twisted.ensureDeferred
async def test_concurrent_streams_on_the_real_model(
    tmp_path: Path, llama_server: str, gguf: str
) -> None:
    async with managed(tmp_path, {"m": ALIAS}, **upstream_kwargs("real", llama_server, gguf)) as m:
        results = await defer.gatherResults(
            [defer.ensureDeferred(chat(m, body("m", max_tokens=6, seed=i))) for i in range(4)]
        )
        assert [r.outcome for r in results] == ["done"] * 4
        assert all(r.text.strip() and r.model == "m" for r in results)
