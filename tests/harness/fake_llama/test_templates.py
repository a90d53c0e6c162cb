"""Chat templates: --chat-template, --chat-template-file, --jinja / --no-jinja."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from harness.fake_llama import (
    FakeConfig,
    FakeServer,
    Faults,
    TemplateError,
    chat_prompt,
    expected_text,
    resolve_template,
    start_fake_server,
)
from harness.fake_llama.cli import parse_args
from harness.fake_llama.templates import (
    BUILTIN_TEMPLATES,
    CHATML_TEMPLATE_SOURCE,
    DEFAULT_TEMPLATE_SOURCE,
)
from tests.harness.fake_llama._support import CHAT, req, start

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]


def test_templates_follow_jinja_and_builtin_rules() -> None:
    assert resolve_template(None).render(MESSAGES) == chat_prompt(MESSAGES)
    assert resolve_template("gemma").render(MESSAGES) == "gemma"
    assert resolve_template("{{ x }}").render(MESSAGES) == chat_prompt(MESSAGES)
    assert resolve_template("{% if x %}").source == "{% if x %}"
    # With Jinja on, "chatml" is the one name llama.cpp swaps for its ChatML template.
    chatml = "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
    assert resolve_template("chatml").render(MESSAGES) == chatml + "<|im_start|>assistant\n"
    assert resolve_template("chatml").source == CHATML_TEMPLATE_SOURCE
    assert resolve_template("chatml", jinja=False).render(MESSAGES).startswith(chatml)
    for name in BUILTIN_TEMPLATES:
        template = resolve_template(name, jinja=False)
        assert template.source == name and "hi" in template.render(MESSAGES)
    with pytest.raises(TemplateError):
        resolve_template("{{ x }}", jinja=False)


async def start_with_flags(*flags: str) -> FakeServer:
    opts, _ = parse_args(["--port", "0", *flags])
    return await start_fake_server(opts.to_config(Faults()), reactor)


async def prompt_tokens(server: FakeServer, question: str, **extra: Any) -> int:
    body = {"messages": [{"role": "user", "content": question}], **extra}
    res = await req(server, "POST", "/v1/chat/completions", body)
    if extra.get("stream"):
        return int(json.loads(res.data[-2])["usage"]["prompt_tokens"])
    return int(res.json()["usage"]["prompt_tokens"])


@pytest_twisted.ensureDeferred
async def test_chat_template_is_jinja_text_so_a_name_renders_as_itself() -> None:
    # Jinja is on by default: "gemma" is template text, every conversation is "gemma".
    server = await start_with_flags("--chat-template", "gemma")
    try:
        res = await req(server, "POST", "/apply-template", CHAT)
        assert res.status == 200 and res.json() == {"prompt": "gemma"}
        short = await prompt_tokens(server, "hi")
        long = await prompt_tokens(server, "what is the capital of France and why is it there")
        assert short == long == 1
        assert await prompt_tokens(server, "a b c d", stream=True, stream_options={
            "include_usage": True}) == 1  # fmt: skip
        assert (await req(server, "GET", "/props")).json()["chat_template"] == "gemma"
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_no_jinja_chat_template_is_a_builtin_name() -> None:
    server = await start_with_flags("--no-jinja", "--chat-template", "gemma")
    try:
        prompt = (await req(server, "POST", "/apply-template", CHAT)).json()["prompt"]
        assert "tell me a story" in prompt and prompt != "gemma"
        assert prompt.startswith("<start_of_turn>user\n")
        assert await prompt_tokens(server, "tell me a story") == len(prompt.split())
        assert (await req(server, "GET", "/props")).json()["chat_template"] == "gemma"
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_chat_template_file_with_jinja_tags_renders_the_messages(tmp_path: Path) -> None:
    template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{{ 'x' }}"
    path = tmp_path / "template.jinja"
    path.write_text(template, encoding="utf-8")
    server = await start_with_flags("--chat-template-file", str(path))
    try:
        prompt = (await req(server, "POST", "/apply-template", CHAT)).json()["prompt"]
        assert prompt == "user: tell me a story"  # the fake's stand-in for running Jinja
        assert await prompt_tokens(server, "tell me a story") == 5
        assert (await req(server, "GET", "/props")).json()["chat_template"] == template
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_default_template_and_generated_text_do_not_change() -> None:
    server = await start()
    plain = await start_with_flags("--chat-template", "plain words here")
    try:
        res = await req(server, "POST", "/apply-template", CHAT)
        assert res.json() == {"prompt": "user: tell me a story"}
        props = (await req(server, "GET", "/props")).json()
        assert props["chat_template"] == DEFAULT_TEMPLATE_SOURCE
        tokens, _ = expected_text(CHAT)
        for s in (server, plain):
            body = (await req(s, "POST", "/v1/chat/completions", CHAT)).json()
            assert body["choices"][0]["message"]["content"] == "".join(tokens)
        assert await prompt_tokens(plain, "tell me a story") == 3
    finally:
        await server.stop()
        await plain.stop()


@pytest_twisted.ensureDeferred
async def test_unknown_builtin_without_jinja_fails_in_process() -> None:
    with pytest.raises(TemplateError, match="not supported: nosuch"):
        await start_fake_server(FakeConfig(jinja=False, chat_template="nosuch"), reactor)
