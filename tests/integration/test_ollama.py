"""The Ollama API with the real ``ollama`` Python client, in front of the fake llama-server.

The client is synchronous (httpx), so it runs in a thread while the reactor serves
server_core and the fake; every byte crosses real loopback sockets.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import ollama
import pytest
import pytest_twisted
import treq
from twisted.internet import threads

from harness.fake_llama.server import FakeConfig
from tests.integration.stack import reactor, stack
from tests.integration.test_managed import managed
from tests.polling import until
from tests.unit.ollama.gguf_files import write_gguf

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")
HI = [{"role": "user", "content": "hello"}]


async def in_thread(work: Callable[[], T]) -> T:
    result: T = await threads.deferToThread(work)
    return result


async def raw(method: str, url: str, body: Any = None, **headers: str) -> tuple[int, bytes]:
    kw: dict[str, Any] = {"headers": {"content-type": "application/json", **headers}}
    if body is not None:
        kw["data"] = json.dumps(body).encode()
    response = await treq.request(method, url, reactor=reactor, **kw)
    return response.code, await response.content()


def ndjson(data: bytes) -> list[dict[str, Any]]:
    assert data.endswith(b"\n"), data[-200:]
    return [json.loads(line) for line in data.splitlines()]


@pytest_twisted.ensureDeferred
async def test_list_show_chat_and_generate_with_the_ollama_client() -> None:
    async with stack() as s:

        def work() -> dict[str, Any]:
            client = ollama.Client(host=s.url)
            stream = list(client.chat("fake", messages=HI, stream=True))
            return {
                "list": client.list(),
                "show": client.show("fake"),
                "whole": client.chat("fake", messages=HI, options={"num_predict": 4}),
                "stream": stream,
                "generate": client.generate("fake", prompt="hello", options={"num_predict": 3}),
                "latest": client.chat("fake:latest", messages=HI, options={"num_predict": 2}),
                "ps": client.ps(),
            }

        got = await in_thread(work)
    assert [m.model for m in got["list"].models] == ["fake"]
    assert "completion" in (got["show"].capabilities or [])
    whole = got["whole"]
    assert whole.done is True and whole.done_reason == "length" and whole.message.content
    assert whole.eval_count == 4 and whole.prompt_eval_count and whole.total_duration
    stream = got["stream"]
    assert all(part.done is False for part in stream[:-1]) and stream[-1].done is True
    assert stream[-1].done_reason and stream[-1].eval_count == len(stream) - 1
    assert stream[-1].eval_duration is not None and stream[-1].eval_duration > 0
    assert "".join(part.message.content or "" for part in stream)
    generated = got["generate"]
    assert generated.done is True and generated.response and generated.eval_count == 3
    assert got["latest"].model == "fake:latest" and got["latest"].done is True
    assert got["ps"].models == []  # someone else runs that server: nothing loaded here


@pytest_twisted.ensureDeferred
async def test_embed_and_the_older_embeddings_route() -> None:
    async with stack(FakeConfig(alias="fake", embeddings=True)) as s:

        def work() -> tuple[Any, Any]:
            client = ollama.Client(host=s.url)
            return client.embed("fake", input=["one", "two"]), client.embeddings("fake", "one")

        embedded, older = await in_thread(work)
    first, second = embedded.embeddings
    assert len(first) == len(second) == 256 and first != second
    assert list(older.embedding) == pytest.approx(list(first))


@pytest_twisted.ensureDeferred
async def test_upstream_loss_mid_stream_is_one_error_line_and_never_done() -> None:
    async with stack() as s:
        body = {"model": "fake", "messages": HI, "options": {"num_predict": 8}}
        status, data = await raw("POST", s.url + "/api/chat", body, **{"X-Fault": "reset_after=2"})
        lines = ndjson(data)
        assert status == 200 and "error" in lines[-1] and len(lines) >= 2
        assert [line for line in lines if "error" in line] == lines[-1:]
        assert not any(line.get("done") is True for line in lines)

        def client_sees_it() -> str:
            client = ollama.Client(host=s.url, headers={"X-Fault": "reset_after=2"})
            with pytest.raises(ollama.ResponseError) as caught:
                for _ in client.chat("fake", messages=HI, stream=True):
                    pass
            return str(caught.value)

        assert "connection lost" in await in_thread(client_sees_it)


@pytest_twisted.ensureDeferred
async def test_errors_are_ollama_shaped_with_a_meaningful_status() -> None:
    async with stack() as s:
        status, data = await raw("POST", s.url + "/api/chat", {"model": "nope", "messages": HI})
        assert status == 404 and "/api/tags" in json.loads(data)["error"]
        status, data = await raw("POST", s.url + "/api/chat", {"model": "fake", "format": 1})
        assert status == 400 and "format" in json.loads(data)["error"]
        status, data = await raw("POST", s.url + "/api/show", {"model": "nope"})
        assert status == 404
        for route in ("/api/pull", "/api/create", "/api/push", "/api/copy", "/api/delete"):
            status, data = await raw("POST", s.url + route, {"model": "x"})
            assert status == 403 and "configuration" in json.loads(data)["error"], route

        def pull() -> ollama.ResponseError:
            with pytest.raises(ollama.ResponseError) as caught:
                ollama.Client(host=s.url).pull("llama3")
            return caught.value

        refused = await in_thread(pull)
        assert refused.status_code == 403 and "serves the models" in refused.error


@pytest_twisted.ensureDeferred
async def test_copilot_sequence_version_tags_show_then_openai_chat() -> None:
    async with stack() as s:
        status, data = await raw("GET", s.url + "/api/version")
        version = json.loads(data)["version"]
        assert status == 200
        assert tuple(int(p) for p in version.split(".")) >= (0, 6, 4)
        status, data = await raw("GET", s.url + "/api/tags")
        names = [m["name"] for m in json.loads(data)["models"]]
        assert status == 200 and names == ["fake"]
        status, data = await raw("POST", s.url + "/api/show", {"model": names[0]})
        shown = json.loads(data)
        assert status == 200 and "tools" in shown["capabilities"]
        assert isinstance(shown["model_info"], dict)
        chat = {"model": names[0], "messages": HI, "max_tokens": 3, "stream": True}
        status, data = await raw("POST", s.url + "/v1/chat/completions", chat)
        assert status == 200 and data.rstrip().endswith(b"data: [DONE]")


@pytest_twisted.ensureDeferred
async def test_managed_model_details_from_its_gguf_file_and_ps(tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "tiny.gguf")
    async with managed(tmp_path, {"tiny": ["-c", "2048"]}, model=str(model), ttl=120) as m:

        def work() -> tuple[Any, Any, Any, Any]:
            client = ollama.Client(host=m.url)
            before = client.ps()
            client.chat("tiny", messages=HI, options={"num_predict": 2})
            return client.list(), client.show("tiny"), before, client.ps()

        def look() -> ollama.ResponseError:
            picture = [{**HI[0], "images": ["iVBORw0KGgo="]}]
            with pytest.raises(ollama.ResponseError) as caught:
                ollama.Client(host=m.url).chat("tiny", messages=picture)
            return caught.value

        listed, shown, before, after = await in_thread(work)
        blind = await in_thread(look)
    assert blind.status_code == 400 and "--mmproj" in blind.error
    (entry,) = listed.models
    assert entry.details.family == "llama" and entry.details.quantization_level == "Q4_K_M"
    assert entry.size == model.stat().st_size
    assert shown.modelinfo["llama.context_length"] == 2048
    assert shown.modelinfo["general.basename"] == "Tiny-Llama"
    assert before.models == []
    (running,) = after.models
    assert running.model == "tiny" and running.context_length == 2048
    assert running.size_vram == 0 and running.expires_at is not None


@pytest_twisted.ensureDeferred
async def test_keep_alive_per_request_sets_the_ttl_and_zero_unloads(tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "tiny.gguf")
    async with managed(tmp_path, {"tiny": []}, model=str(model), ttl=300) as m:

        def chat(keep_alive: Any) -> Any:
            client = ollama.Client(host=m.url)
            client.chat("tiny", messages=HI, options={"num_predict": 2}, keep_alive=keep_alive)
            return client.ps()

        (kept,) = (await in_thread(lambda: chat("-1"))).models
        assert kept.expires_at is not None and kept.expires_at.year >= 2100
        (timed,) = (await in_thread(lambda: chat("10m"))).models
        assert m.context.keep_alive("tiny") == 600
        assert timed.expires_at is not None and timed.expires_at.year < 2100
        await in_thread(lambda: chat(0))
        await until(lambda: not m.context.is_loaded("tiny"))
        gone = await in_thread(lambda: ollama.Client(host=m.url).ps())
        assert gone.models == []
        # Ollama's load and unload requests: an empty prompt, then keep_alive 0.
        loaded = await in_thread(lambda: ollama.Client(host=m.url).generate("tiny", prompt=""))
        assert loaded.done_reason == "load" and m.context.is_loaded("tiny")
        unload = ollama.Client(host=m.url).generate
        unloaded = await in_thread(lambda: unload("tiny", prompt="", keep_alive=0))
        assert unloaded.done_reason == "unload" and not m.context.is_loaded("tiny")


@pytest_twisted.ensureDeferred
async def test_a_client_that_leaves_mid_stream_cancels_the_upstream_at_once() -> None:
    async with stack() as s:
        before = s.fake.cancelled

        def take_two() -> list[Any]:
            client = ollama.Client(host=s.url, headers={"X-Fault": "token_delay=20ms"})
            options = {"num_predict": 200}
            stream: Any = client.chat("fake", messages=HI, stream=True, options=options)
            parts = [next(stream), next(stream)]
            stream.close()  # a generator: closes the response, the connection goes away
            return parts

        parts = await in_thread(take_two)
        assert all(part.done is False for part in parts)
        waited = await until(lambda: s.fake.cancelled > before, timeout=2.0)
        assert waited < 0.5, f"upstream cancelled only after {waited:.3f} s"
