"""Shared helpers of the fake llama-server tests: start a server, talk to it raw."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor

from harness.fake_llama import FakeConfig, FakeServer, start_fake_server
from harness.fake_llama.rawhttp import RawResponse, raw_request

CHAT = {"messages": [{"role": "user", "content": "tell me a story"}]}


# ignore_eos + max_tokens: exactly 10 tokens, so a stream has 1 role + 10 tokens
# + 1 finish + [DONE] = 13 data events.
LONG = {
    "messages": [{"role": "user", "content": "count for me"}],
    "stream": True,
    "ignore_eos": True,
    "max_tokens": 10,
}


TOTAL_EVENTS = 13


async def start(faults: str = "", **kw: Any) -> FakeServer:
    """An in-process fake, loaded, with these ``--fault`` specs and FakeConfig fields."""
    return await start_fake_server(FakeConfig(faults=faults, **kw), reactor)


async def req(
    server: FakeServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> RawResponse:
    """One request on a fresh connection, recorded byte for byte."""
    return await raw_request(reactor, "127.0.0.1", server.port, method, path, body, headers, **kw)


def assert_error(res: RawResponse, status: int, type_: str, message: str | None = None) -> None:
    """``res`` is llama-server's JSON error for ``status``."""
    assert res.status == status, res.body
    assert res.header("content-type") == "application/json; charset=utf-8"
    err = res.json()["error"]
    assert err["code"] == status and err["type"] == type_
    if message is not None:
        assert err["message"] == message


async def chat(
    server: FakeServer, body: Any = None, fault: str | None = None, **kw: Any
) -> RawResponse:
    """A chat request (default: the LONG stream), with an ``X-Fault`` header if given."""
    headers = {"X-Fault": fault} if fault is not None else None
    return await req(server, "POST", "/v1/chat/completions", body or LONG, headers, **kw)


def contents(res: RawResponse) -> list[str]:
    """The token texts of a chat stream, in order."""
    out = []
    for obj in res.json_events():
        for choice in obj.get("choices", []):
            c = choice.get("delta", {}).get("content")
            if c:
                out.append(c)
    return out


def free_port() -> int:
    """A port nothing listens on right now (for tests that need a fixed port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health(port: int) -> Any:
    """``GET /health`` on ``port`` (a child process's), quick to give up."""
    return raw_request(reactor, "127.0.0.1", port, "GET", "/health", idle_timeout=2.0)
