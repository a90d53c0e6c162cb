"""Managed aliases end to end: server_core spawns fake-llama-server children on demand."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from harness.client import stream_request
from harness.fake_llama.generate import expected_text
from server_core.config import parse_config
from server_core.service import make_service
from tests.integration.procs import SOURCE_ROOT, reactor
from tests.polling import until

pytestmark = pytest.mark.timeout(60)


def fake_executable(tmp_path: Path) -> Path:
    """An executable that is a fake llama-server, spawned exactly like the real one.

    A Python script (not a shell script that execs Python), so the child's command line
    still names it, as a real llama-server's does: orphan reaping matches on that.
    """
    script = tmp_path / "llama-server"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {SOURCE_ROOT!r})\n"
        "from harness.fake_llama.cli import main\n"
        "sys.exit(main())\n"
    )
    script.chmod(0o755)
    return script


@dataclass
class Managed:
    url: str
    service: Any
    routes: Any

    @property
    def context(self) -> Any:
        return self.routes._router.context

    def pids(self) -> list[int]:
        return [entry["pid"] for entry in self.context.running() if entry["pid"]]


@asynccontextmanager
async def managed(
    tmp_path: Path,
    aliases: dict[str, list[str]],
    *,
    executable: str | None = None,
    model: str | None = None,
    names: dict[str, list[str]] | None = None,
    **llama: Any,
) -> AsyncIterator[Managed]:
    """server_core in-process with managed aliases (each: its extra llama-server flags).

    By default every alias runs the fake llama-server on a dummy model file; the real
    tier passes a real ``executable`` and a real GGUF ``model``.
    """
    settings = {"stop_grace": 2, "start_timeout": 10, **llama}
    lines = [
        "server:",
        "  listen: tcp:0:interface=127.0.0.1",
        "  keepalive_interval: 5",
        "llama_server:",
        f"  executable: {executable or fake_executable(tmp_path)}",
        *(f"  {key}: {value}" for key, value in settings.items()),
        "aliases:",
    ]
    for name, flags in aliases.items():
        path = model
        if path is None:
            dummy = tmp_path / f"{name}.gguf"
            dummy.write_bytes(b"GGUF")
            path = str(dummy)
        lines += [
            f"  - alias: {json.dumps(name)}",
            f"    model: {json.dumps(path)}",
            f"    context_params: {json.dumps(flags)}",
        ]
        if names and name in names:
            lines.append(f"    names: {json.dumps(names[name])}")
    config = parse_config("\n".join(lines) + "\n", file=str(tmp_path / "managed.yaml"))
    service = make_service(config, reactor)
    listener = list(service)[-1]
    service.startService()
    port = (await listener.when_listening).getHost().port
    m = Managed(f"http://127.0.0.1:{port}", service, service.routes)
    try:
        yield m
    finally:
        pids = m.pids()
        await service.stopService()
        # No child outlives the server.
        for pid in pids:
            assert not _alive(pid), f"child {pid} survived the server"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def chat(model: str, max_tokens: int = 6, stream: bool = True) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": f"hello {model}"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


async def ask(m: Managed, model: str, **kw: Any) -> Any:
    headers = kw.pop("headers", None)
    return await stream_request(
        m.url + "/v1/chat/completions", chat(model, **kw), headers=headers, timeout=30
    )


@pytest_twisted.ensureDeferred
async def test_started_on_first_request_with_load_delay(tmp_path: Path) -> None:
    async with managed(tmp_path, {"a": ["--fault", "load_delay=500ms"]}) as m:
        start = reactor.seconds()
        result = await ask(m, "a")
        assert result.outcome == "done", result.summary()
        assert result.text == "".join(expected_text(chat("a"))[0])
        assert result.model == "a"
        assert reactor.seconds() - start >= 0.5
        (entry,) = m.context.running()
        assert entry["state"] == "ready" and entry["pid"] and entry["port"]


def assert_start_failure(result: Any, statuses: tuple[int, ...]) -> None:
    """A failed start is an HTTP status within the loading grace (1 s); past it the stream
    has begun with loading comments, and its one error event is the honest ending left."""
    if result.outcome == "http_error":
        assert result.status in statuses, result.summary()
    else:
        assert result.outcome == "error_event" and result.status == 200, result.summary()


@pytest_twisted.ensureDeferred
async def test_crash_during_load_is_a_client_error_at_once_not_at_the_start_timeout(
    tmp_path: Path,
) -> None:
    # The crash is noticed when the child exits, not when start_timeout (60 s) expires;
    # the bound is loose because a loaded CI machine is slow to spawn Python.
    flags = {"broken": ["--fault", "crash_on_load=100ms"]}
    async with managed(tmp_path, flags, start_timeout=60) as m:
        start = reactor.seconds()
        result = await ask(m, "broken")
        elapsed = reactor.seconds() - start
        assert_start_failure(result, (503,))
        assert "broken" in result.error["message"]
        assert elapsed < 15, f"took {elapsed:.2f} s"
        assert m.context.running() == []


@pytest_twisted.ensureDeferred
async def test_never_ready_is_a_start_timeout_error(tmp_path: Path) -> None:
    async with managed(tmp_path, {"stuck": ["--fault", "never_ready"]}, start_timeout=1) as m:
        result = await ask(m, "stuck")
        assert_start_failure(result, (503, 504))
        assert "stuck" in result.error["message"]
        await until(lambda: m.context.running() == [], timeout=5)


@pytest_twisted.ensureDeferred
async def test_crash_mid_stream_is_an_error_event_and_next_request_restarts(
    tmp_path: Path,
) -> None:
    async with managed(tmp_path, {"a": []}) as m:
        crashed = await ask(m, "a", max_tokens=20, headers={"X-Fault": "crash_after=3"})
        assert crashed.outcome == "error_event", crashed.summary()
        await until(lambda: not m.context.is_loaded("a"), timeout=2)
        again = await ask(m, "a")
        assert again.outcome == "done"
        assert m.context.starts == 2


@pytest_twisted.ensureDeferred
async def test_swap_waits_for_the_stream_in_flight(tmp_path: Path) -> None:
    async with managed(tmp_path, {"a": [], "b": []}, max_loaded=1) as m:
        first = defer.ensureDeferred(
            ask(m, "a", max_tokens=15, headers={"X-Fault": "token_delay=50ms"})
        )
        await until(lambda: m.context.is_loaded("a"), timeout=10)
        other = defer.ensureDeferred(ask(m, "b"))
        a_result = await first
        assert a_result.outcome == "done" and a_result.model == "a"
        b_result = await other
        assert b_result.outcome == "done" and b_result.model == "b"
        assert [e["alias"] for e in m.context.running()] == ["b"]


@pytest_twisted.ensureDeferred
async def test_100_concurrent_requests_for_a_cold_model_start_it_once(tmp_path: Path) -> None:
    async with managed(
        tmp_path, {"a": ["-np", "8", "--fault", "load_delay=300ms"]}, max_queue=200
    ) as m:
        results = await defer.gatherResults(
            [defer.ensureDeferred(ask(m, "a", max_tokens=3)) for _ in range(100)]
        )
        assert {r.outcome for r in results} == {"done"}
        assert m.context.starts == 1


@pytest_twisted.ensureDeferred
async def test_interleaved_aliases_each_answered_by_its_own_model(tmp_path: Path) -> None:
    async with managed(tmp_path, {"a": [], "b": [], "c": []}, max_loaded=2) as m:
        order = ["a", "b", "c", "a", "c", "b", "b", "a", "c"] * 2
        results = await defer.gatherResults(
            [defer.ensureDeferred(ask(m, name, max_tokens=3)) for name in order]
        )
        for name, result in zip(order, results, strict=True):
            assert result.outcome == "done", result.summary()
            assert result.model == name
            assert result.text == "".join(expected_text(chat(name, max_tokens=3))[0])


@pytest_twisted.ensureDeferred
async def test_admin_running_unload_and_logs(tmp_path: Path) -> None:
    async with managed(tmp_path, {"a": []}) as m:
        assert (await ask(m, "a")).outcome == "done"
        running = await stream_request(m.url + "/running", None, method="GET", timeout=5)
        (entry,) = running.json_body["data"]
        assert entry["alias"] == "a" and entry["state"] == "ready" and entry["in_flight"] == 0
        assert entry["probe_misses"] == 0  # a healthy child answers every /health probe
        logs = await stream_request(m.url + "/logs/a", None, method="GET", timeout=5)
        assert any("listening on" in line for line in logs.json_body["lines"])
        unknown = await stream_request(m.url + "/logs/zzz", None, method="GET", timeout=5)
        assert unknown.status == 404
        pid = entry["pid"]
        unload = await stream_request(m.url + "/unload", {"alias": "a"}, timeout=10)
        assert unload.json_body == {"unloaded": ["a"]}
        assert m.context.running() == [] and not _alive(pid)


@pytest_twisted.ensureDeferred
async def test_logs_follow_streams_new_lines(tmp_path: Path) -> None:
    async with managed(tmp_path, {"a": ["--verbose"]}) as m:
        assert (await ask(m, "a")).outcome == "done"
        seen: list[str] = []

        def on_event(event: Any, t: float) -> None:
            seen.append(event.data or "")

        follow = defer.ensureDeferred(
            stream_request(
                m.url + "/logs/a?follow=1",
                None,
                method="GET",
                timeout=20,
                on_event=on_event,
                disconnect_after=1000,
            )
        )
        await until(lambda: len(seen) > 0, timeout=5)
        before = len(seen)
        assert (await ask(m, "a")).outcome == "done"
        await until(lambda: len(seen) > before, timeout=5)
        follow.cancel()
        follow.addErrback(lambda f: None)
