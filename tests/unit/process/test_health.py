"""HttpHealthCheck against a real listening socket (no child process)."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor

reactor: Any = _reactor
pytestmark = pytest.mark.timeout(30)


@pytest_twisted.ensureDeferred
async def test_health_200_without_content_length_counts_as_ready() -> None:
    from twisted.internet.protocol import Factory, Protocol

    from server_core.process.health import HttpHealthCheck

    class CloseDelimited(Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"status":"ok"}')  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]

    port = reactor.listenTCP(0, Factory.forProtocol(CloseDelimited), interface="127.0.0.1")
    try:
        check = HttpHealthCheck(reactor)
        assert await check(f"http://127.0.0.1:{port.getHost().port}", 5) == 200
    finally:
        await port.stopListening()
