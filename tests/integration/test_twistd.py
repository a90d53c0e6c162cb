"""server_core as users run it: `twistd -n server-core` in front of a fake-llama-server child."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task, threads

from harness.client import stream_request
from harness.fake_llama.generate import expected_text
from tests.integration.procs import Child, fake_argv, free_port, reactor, spawn, twistd_argv

pytestmark = pytest.mark.timeout(60)


@dataclass
class Running:
    fake: Child
    server: Child
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def running(
    tmp_path: Path, *fake_args: str, drain_timeout: float = 10
) -> AsyncIterator[Running]:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF fake weights")
    fake_port, port = free_port(), free_port()
    fake = spawn("fake", fake_argv(str(model), "--port", str(fake_port), "-a", "fake", *fake_args))
    server: Child | None = None
    try:
        await fake.when_line(r"listening on http://")
        config = tmp_path / "server.yaml"
        config.write_text(
            f"server:\n  drain_timeout: {drain_timeout}\n"
            f"external:\n  - alias: fake\n    url: http://127.0.0.1:{fake_port}\n"
        )
        server = spawn("twistd", twistd_argv(str(config), port))
        await server.when_line(r"server-core listening on http://")
        yield Running(fake, server, port)
    finally:
        if server is not None:
            await server.stop()
        await fake.stop()


def body(max_tokens: int = 10, stream: bool = True) -> dict[str, Any]:
    return {
        "model": "fake",
        "messages": [{"role": "user", "content": "hello from the sdk"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


@pytest_twisted.ensureDeferred
async def test_openai_sdk_stream_and_non_stream(tmp_path: Path) -> None:
    import openai

    async with running(tmp_path, "--fault", "token_delay=5ms") as r:

        def use_sdk() -> tuple[str, str, list[str]]:
            client = openai.OpenAI(base_url=r.url + "/v1", api_key="unused", max_retries=0)
            stream = client.chat.completions.create(
                model="fake", messages=body()["messages"], max_tokens=10, stream=True
            )
            streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            whole = client.chat.completions.create(
                model="fake", messages=body()["messages"], max_tokens=10
            )
            models = [m.id for m in client.models.list()]
            return streamed, whole.choices[0].message.content or "", models

        streamed, whole, models = await threads.deferToThread(use_sdk)
        expected = "".join(expected_text(body())[0])
        assert streamed == whole == expected
        assert "fake" in models


async def terminate_mid_stream(r: Running, payload: dict[str, Any]) -> Any:
    """Start a stream, SIGTERM the server once its first event arrived, return the result."""
    first_event: defer.Deferred[None] = defer.Deferred()

    def on_event(event: Any, t: float) -> None:
        if not first_event.called:
            first_event.callback(None)

    pending = defer.ensureDeferred(
        stream_request(r.url + "/v1/chat/completions", payload, on_event=on_event)
    )
    await first_event
    r.server.signal("TERM")
    return await pending


@pytest_twisted.ensureDeferred
async def test_sigterm_lets_streams_in_flight_finish(tmp_path: Path) -> None:
    async with running(tmp_path, "--fault", "token_delay=40ms") as r:
        result = await terminate_mid_stream(r, body(max_tokens=25))
        assert result.outcome == "done", result.summary()
        assert result.text == "".join(expected_text(body(max_tokens=25))[0])
        assert await r.server.when_exited() == 0
        refused = await stream_request(r.url + "/v1/chat/completions", body(), timeout=5)
        assert refused.outcome == "connect_error"


@pytest_twisted.ensureDeferred
async def test_drain_timeout_ends_remaining_streams_with_error_event(tmp_path: Path) -> None:
    async with running(tmp_path, "--fault", "token_delay=100ms", drain_timeout=0.3) as r:
        result = await terminate_mid_stream(r, body(max_tokens=60))
        assert result.outcome == "error_event", result.summary()
        assert "shutting down" in json.dumps(result.error)
        assert await r.server.when_exited() == 0


@pytest_twisted.ensureDeferred
async def test_bad_config_fails_with_file_and_line_no_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("server:\n  listen: tcp:0\n  keepalive_interval: soon\n")
    child = spawn("twistd", twistd_argv(str(config), free_port()))
    code = await child.when_exited()
    output = "\n".join(child.lines)
    assert code == 1
    assert f"{config}:3" in output and "keepalive_interval" in output
    assert "Traceback" not in output
    # The line that matters and a hint, not twistd's whole usage text.
    assert "examples/" in output
    assert "--config" not in output and "Usage:" not in output
    assert len([line for line in output.splitlines() if line.strip()]) <= 3, output


@pytest_twisted.ensureDeferred
async def test_a_wrong_option_still_shows_the_usage_text(tmp_path: Path) -> None:
    argv = twistd_argv(str(tmp_path / "none.yaml"), free_port())
    child = spawn("twistd", [*argv, "--no-such-option"])
    code = await child.when_exited()
    output = "\n".join(child.lines)
    assert code != 0
    assert "--config" in output and "no-such-option" in output


def managed_config(tmp_path: Path, port_file_flags: list[str], state_dir: Path) -> Path:
    from tests.integration.test_managed import fake_executable

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    config = tmp_path / "managed.yaml"
    config.write_text(
        "llama_server:\n"
        f"  executable: {fake_executable(tmp_path)}\n"
        "  stop_grace: 1\n"
        "aliases:\n"
        f"  - alias: m\n    model: {model}\n    context_params: {json.dumps(port_file_flags)}\n"
    )
    return config


async def start_managed(tmp_path: Path, config: Path, state_dir: Path) -> tuple[Child, int, int]:
    """twistd with one managed alias; returns (server, port, child pid after a request)."""
    port = free_port()
    server = spawn(
        "twistd", twistd_argv(str(config), port), env={"XDG_RUNTIME_DIR": str(state_dir)}
    )
    await server.when_line(r"server-core listening on")
    url = f"http://127.0.0.1:{port}"
    result = await stream_request(url + "/v1/chat/completions", {**body(), "model": "m"})
    assert result.outcome == "done", result.summary()
    running = await stream_request(url + "/running", None, method="GET", timeout=5)
    (entry,) = running.json_body["data"]
    return server, port, entry["pid"]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest_twisted.ensureDeferred
async def test_sigterm_stops_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "run"
    config = managed_config(tmp_path, ["--fault", "ignore_sigterm"], state)
    server, _, child = await start_managed(tmp_path, config, state)
    assert alive(child)
    server.signal("TERM")
    assert await server.when_exited(timeout=30) == 0
    assert not alive(child), "the child outlived server_core"


@pytest.mark.parametrize("restart_with", ["the same config", "no managed models"])
@pytest_twisted.ensureDeferred
async def test_after_sigkill_the_next_start_reaps_the_orphan(
    tmp_path: Path, restart_with: str
) -> None:
    state = tmp_path / "run"
    # The child ignores SIGTERM, so even the parent-death signal cannot stop it.
    config = managed_config(tmp_path, ["--fault", "ignore_sigterm"], state)
    server, _, child = await start_managed(tmp_path, config, state)
    server.signal("KILL")
    await server.when_exited()
    assert alive(child), "expected an orphan to clean up"
    if restart_with == "no managed models":  # the orphan is reaped whatever the config
        config = tmp_path / "plain.yaml"
        config.write_text("external:\n  - alias: e\n    url: http://127.0.0.1:9\n")
    again = spawn(
        "twistd", twistd_argv(str(config), free_port()), env={"XDG_RUNTIME_DIR": str(state)}
    )
    try:
        await again.when_line(r"server-core listening on")
        assert not alive(child), f"the next start with {restart_with} did not reap the orphan"
        assert any("left by a previous run" in line for line in again.lines)
    finally:
        await again.stop()
        if alive(child):  # the test failed: do not leave the orphan behind
            os.killpg(child, signal.SIGKILL)


@pytest_twisted.ensureDeferred
async def test_after_sigkill_a_plain_child_dies_with_its_parent(tmp_path: Path) -> None:
    state = tmp_path / "run"
    config = managed_config(tmp_path, [], state)
    server, _, child = await start_managed(tmp_path, config, state)
    server.signal("KILL")
    await server.when_exited()
    for _ in range(100):
        if not alive(child):
            return
        await task.deferLater(reactor, 0.05, lambda: None)
    raise AssertionError("the child outlived a SIGKILLed server_core")


def argv_without_port(config: Path) -> list[str]:
    argv = twistd_argv(str(config), 0)
    return argv[: argv.index("--port")]


@pytest_twisted.ensureDeferred
async def test_a_network_address_without_keys_refuses_to_start(tmp_path: Path) -> None:
    config = tmp_path / "open.yaml"
    config.write_text("server:\n  drain_timeout: 1\n")
    listen_file = tmp_path / "listen.yaml"
    listen_file.write_text(f"server:\n  listen: tcp:{free_port()}:interface=0.0.0.0\n")
    runs = [
        # twistd's --port on every interface, and the config's own listen.
        [*twistd_argv(str(config), 0)[:-1], f"tcp:{free_port()}"],
        argv_without_port(listen_file),
    ]
    for argv in runs:
        child = spawn("twistd", argv)
        code = await child.when_exited()
        output = "\n".join(child.lines)
        assert code == 1, output
        assert "without API keys" in output
        assert "api_keys" in output and "api_keys_env" in output
        assert "allow_unauthenticated: true" in output
        assert "Traceback" not in output and "Usage:" not in output and "--config" not in output
        assert len([line for line in output.splitlines() if line.strip()]) == 1, output
        assert not any("listening on" in line for line in child.lines)


@pytest_twisted.ensureDeferred
async def test_allow_unauthenticated_starts_with_a_warning(tmp_path: Path) -> None:
    config = tmp_path / "open.yaml"
    config.write_text("server:\n  allow_unauthenticated: true\n")
    port = free_port()
    child = spawn("twistd", [*twistd_argv(str(config), 0)[:-1], f"tcp:{port}"])
    try:
        await child.when_line(r"server-core listening on")
        warning = [line for line in child.lines if "without API keys" in line]
        assert warning and "allow_unauthenticated" in warning[0], child.lines
        health = await stream_request(
            f"http://127.0.0.1:{port}/health", None, method="GET", timeout=5
        )
        assert health.status == 200
    finally:
        await child.stop()
