"""The generated HAProxy file's retry rules, against two scripted nodes: refusals before
an answer go to the other node, a node's 503 reaches the client with its Retry-After,
and nothing is retried once a byte of the answer was sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import task
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from harness.client import stream_request
from server_core.cluster_config import haproxy_config, parse_cluster
from tests.cluster.cluster import free_port, haproxy_binary
from tests.integration.procs import Child, reactor, spawn

pytestmark = pytest.mark.timeout(60)

BUSY = b'{"error":{"message":"busy","type":"unavailable_error","code":503}}'


class ScriptedNode(Resource):
    """Ready for every check; answers each POST the way ``mode`` says, and counts them."""

    isLeaf = True

    def __init__(self, name: str, mode: str) -> None:
        super().__init__()
        self.name = name
        self.mode = mode
        self.posts = 0

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return b'{"status":"ready"}'

    def render_POST(self, request: Request) -> bytes | int:
        self.posts += 1
        request.setHeader(b"x-served-by", f"{self.name}/m".encode())
        if self.mode == "busy":
            request.setResponseCode(503)
            request.setHeader(b"retry-after", b"7")
            request.setHeader(b"content-type", b"application/json")
            return BUSY
        if self.mode == "empty":  # accepted, then closed before any byte
            request.channel.transport.abortConnection()  # type: ignore[union-attr]
            return NOT_DONE_YET
        request.setHeader(b"content-type", b"text/event-stream")
        request.write(b'data: {"choices":[{"delta":{"content":"hi"}}],"model":"m"}\n\n')
        if self.mode == "cut":  # the answer began: a retry now would send it twice
            reactor.callLater(0.05, request.channel.transport.abortConnection)  # type: ignore[union-attr]
            return NOT_DONE_YET
        request.write(b"data: [DONE]\n\n")
        request.finish()
        return NOT_DONE_YET


@dataclass
class Pair:
    nodes: list[ScriptedNode]
    url: str


@asynccontextmanager
async def pair(tmp_path: Path, first: str, second: str) -> AsyncIterator[Pair]:
    nodes = [ScriptedNode("one", first), ScriptedNode("two", second)]
    ports: list[Any] = [reactor.listenTCP(0, Site(node), interface="127.0.0.1") for node in nodes]
    try:
        url, haproxy = await _haproxy_in_front(tmp_path, nodes, ports)
        try:
            for node in nodes:
                node.posts = 0
            yield Pair(nodes, url)
        finally:
            await haproxy.stop()
            assert haproxy.exited
    finally:
        for listening in ports:
            await listening.stopListening()


async def _haproxy_in_front(
    tmp_path: Path, nodes: list[ScriptedNode], ports: list[Any]
) -> tuple[str, Child]:
    """HAProxy on a free port, listening; started again if the port was taken meanwhile."""
    for _ in range(3):
        port = free_port("127.0.0.1")
        description: dict[str, Any] = {
            "listen": f"127.0.0.1:{port}",
            "check": {"interval": "200ms"},
            "nodes": [
                {"name": n.name, "address": f"127.0.0.1:{p.getHost().port}", "models": ["m"]}
                for n, p in zip(nodes, ports, strict=True)
            ],
        }
        config = tmp_path / "haproxy.cfg"
        config.write_text(haproxy_config(parse_cluster(description)))
        haproxy: Child = spawn("haproxy", [haproxy_binary(), "-db", "-f", str(config)])
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        for _ in range(200):  # until a scripted node answers through it (or it exited)
            probe = await stream_request(url, None, method="GET", timeout=2)
            if probe.body == b'{"status":"ready"}' and not haproxy.exited:
                return url, haproxy
            if haproxy.exited:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
    raise AssertionError("HAProxy did not start: " + "\n".join(haproxy.lines[-10:]))


def body() -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}


@pytest_twisted.ensureDeferred
async def test_a_node_closing_before_any_byte_is_retried_on_the_other(tmp_path: Path) -> None:
    async with pair(tmp_path, "empty", "ok") as p:
        for _ in range(4):
            result = await stream_request(p.url, body(), timeout=10)
            assert result.outcome == "done", result.summary()
            assert result.headers["x-served-by"] == ["two/m"]
        assert p.nodes[1].posts == 4
        assert p.nodes[0].posts >= 1, "HAProxy never tried the node that closes"


@pytest_twisted.ensureDeferred
async def test_a_nodes_503_is_retried_then_reaches_the_client_with_retry_after(
    tmp_path: Path,
) -> None:
    async with pair(tmp_path, "busy", "busy") as p:
        result = await stream_request(p.url, body(), timeout=10)
        assert result.outcome == "http_error" and result.status == 503, result.summary()
        assert result.headers["retry-after"] == ["7"]
        assert result.error is not None and result.error["message"] == "busy"
        # One try and two retries (retries 2), each on the other node (redispatch 1).
        assert [n.posts for n in p.nodes] in ([2, 1], [1, 2])


@pytest_twisted.ensureDeferred
async def test_nothing_is_retried_after_the_first_byte(tmp_path: Path) -> None:
    async with pair(tmp_path, "cut", "cut") as p:
        result = await stream_request(p.url, body(), timeout=10)
        assert result.outcome == "truncated" and result.end_reason == "lost", result.summary()
        assert result.text == "hi"
        assert sum(n.posts for n in p.nodes) == 1
