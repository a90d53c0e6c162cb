"""A slow reader of a 50 MB stream: server_core pauses the upstream, its memory stays flat."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.internet.interfaces import IPullProducer
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.web import resource, server
from zope.interface import implementer

from tests.integration.procs import free_port, reactor, rss_kib, spawn, twistd_argv

pytestmark = pytest.mark.timeout(90)

EVENT = (
    b"data: " + json.dumps({"choices": [{"delta": {"content": "x" * 65000}}]}).encode() + b"\n\n"
)
TOTAL_EVENTS = 50 * 1024 * 1024 // len(EVENT) + 1


@implementer(IPullProducer)
class _Events:
    """Writes one event each time the transport asks for more (never buffers ahead)."""

    def __init__(self, request: server.Request, count: int) -> None:
        self.request = request
        self.left = count

    def resumeProducing(self) -> None:
        if self.left == 0:
            self.request.write(b"data: [DONE]\n\n")
            self.request.unregisterProducer()
            self.request.finish()
            return
        self.left -= 1
        self.request.write(EVENT)

    def stopProducing(self) -> None:
        self.left = 0


class BigStream(resource.Resource):
    isLeaf = True

    def render_POST(self, request: server.Request) -> Any:
        body = json.loads(request.content.read())  # type: ignore[union-attr]
        request.setHeader(b"content-type", b"text/event-stream")
        request.registerProducer(_Events(request, body.get("events", TOTAL_EVENTS)), False)
        return server.NOT_DONE_YET


class SlowReader(Protocol):
    """Reads one chunk, then stops reading for a moment: a client on a slow link."""

    def __init__(self, events: int = TOTAL_EVENTS) -> None:
        self.events = events
        self.received = 0
        self.tail = b""
        self.done: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        payload = json.dumps({"model": "big", "messages": [{"role": "user", "content": "x"}],
                              "stream": True, "events": self.events}).encode()  # fmt: skip
        self.transport.write(  # type: ignore[union-attr]
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: "
            + str(len(payload)).encode()
            + b"\r\n\r\n"
            + payload
        )

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.tail = (self.tail + data)[-64:]
        self.transport.pauseProducing()  # type: ignore[union-attr]
        reactor.callLater(0.004, self.transport.resumeProducing)  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(None)


@pytest_twisted.ensureDeferred
async def test_slow_reader_of_50mb_keeps_server_memory_flat(tmp_path: Path) -> None:
    upstream = reactor.listenTCP(0, server.Site(BigStream()), interface="127.0.0.1")
    port = free_port()
    config = tmp_path / "server.yaml"
    config.write_text(
        f"external:\n  - alias: big\n    url: http://127.0.0.1:{upstream.getHost().port}\n"
    )
    child = spawn("twistd", twistd_argv(str(config), port))
    try:
        await child.when_line(r"server-core listening on")
        # Warm up (imports, pools) so the baseline is the steady state.
        warm = SlowReader(events=3)
        factory = ClientFactory.forProtocol(lambda: warm)
        reactor.connectTCP("127.0.0.1", port, factory)
        await warm.done
        baseline = rss_kib(child.pid)

        reader = SlowReader()
        reactor.connectTCP("127.0.0.1", port, ClientFactory.forProtocol(lambda: reader))
        peak = baseline

        def sample() -> None:
            nonlocal peak
            peak = max(peak, rss_kib(child.pid))

        sampler = task.LoopingCall(sample)
        sampler.start(0.02)
        await reader.done
        sampler.stop()
        assert reader.received >= 50 * 1024 * 1024
        assert b"data: [DONE]" in reader.tail
        growth_mb = (peak - baseline) / 1024
        assert growth_mb < 10, f"server RSS grew {growth_mb:.1f} MB for a 50 MB stream"
    finally:
        await child.stop()
        await upstream.stopListening()
