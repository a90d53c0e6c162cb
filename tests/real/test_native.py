"""llama-server's own routes and root-pointed SDKs through server_core, on the real
llama-server and model: what llama.cpp's web UI and scripts send must work unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import threads

from tests.integration.procs import reactor
from tests.integration.test_managed import managed
from tests.real.test_real import ALIAS, upstream_kwargs

pytestmark = pytest.mark.timeout(180)


async def call(method: str, url: str, body: Any = None) -> tuple[int, Any, bytes]:
    kw: dict[str, Any] = {"headers": {"content-type": "application/json"}}
    if body is not None:
        kw["data"] = json.dumps(body).encode()
    response = await treq.request(method, url, reactor=reactor, **kw)
    raw = await response.content()
    try:
        return response.code, json.loads(raw), raw
    except ValueError:
        return response.code, None, raw


def events(raw: bytes) -> list[Any]:
    frames = raw.decode().replace("\r\n", "\n").split("\n\n")
    return [json.loads(f[6:]) for f in frames if f.startswith("data: ")]


@pytest_twisted.ensureDeferred
async def test_native_routes_on_the_real_llama_server(
    tmp_path: Path, llama_server: str, gguf: str
) -> None:
    async with managed(
        tmp_path, {"gemma": ALIAS}, **upstream_kwargs("real", llama_server, gguf)
    ) as m:
        body = {"model": "gemma", "prompt": "The capital of France is", "n_predict": 8}
        body |= {"temperature": 0, "seed": 1}
        status, whole, raw = await call("POST", m.url + "/completion", body)
        assert status == 200 and whole["stop"] is True and whole["content"], raw
        status, _, raw = await call("POST", m.url + "/completion", {**body, "stream": True})
        got = events(raw)
        assert status == 200 and got and got[-1]["stop"] is True, raw
        assert not any("error" in e for e in got) and b"[DONE]" not in raw
        assert "".join(e.get("content", "") for e in got) == whole["content"]

        status, tokens, raw = await call(
            "POST", m.url + "/tokenize", {"model": "gemma", "content": "Hello world"}
        )
        assert status == 200 and tokens["tokens"], raw
        status, text, raw = await call(
            "POST", m.url + "/detokenize", {"model": "gemma", "tokens": tokens["tokens"]}
        )
        assert status == 200 and text["content"].strip() == "Hello world", raw

        messages = [{"role": "user", "content": "marker-1234"}]
        status, rendered, raw = await call(
            "POST", m.url + "/apply-template", {"model": "gemma", "messages": messages}
        )
        assert status == 200 and "marker-1234" in rendered["prompt"], raw

        status, props, raw = await call("GET", m.url + "/props?model=gemma")
        assert status == 200 and "default_generation_settings" in props, raw


@pytest_twisted.ensureDeferred
async def test_sdk_at_the_root_and_a_request_without_model(
    tmp_path: Path, llama_server: str, gguf: str
) -> None:
    import openai

    async with managed(
        tmp_path, {"gemma": ALIAS}, **upstream_kwargs("real", llama_server, gguf)
    ) as m:

        def use_sdk() -> tuple[str, str, str]:
            client = openai.OpenAI(base_url=m.url, api_key="none", max_retries=0)  # no /v1
            messages: Any = [{"role": "user", "content": "Say hello in three words."}]
            stream = client.chat.completions.create(
                model="gemma", messages=messages, max_tokens=12, temperature=0, seed=1,
                stream=True,
            )  # fmt: skip
            streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            whole = client.chat.completions.create(
                model="gemma", messages=messages, max_tokens=12, temperature=0, seed=1
            )
            listed = client.models.list().data[0].id
            return streamed, whole.choices[0].message.content or "", listed

        streamed, whole, listed = await threads.deferToThread(use_sdk)
        assert streamed.strip() and streamed == whole and listed == "gemma"

        # No model named: the only alias serves, and the reply names it.
        payload = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        status, reply, raw = await call("POST", m.url + "/v1/chat/completions", payload)
        assert status == 200 and reply["model"] == "gemma", raw
        assert reply["choices"][0]["message"]["content"] is not None
