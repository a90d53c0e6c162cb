"""Test doubles shared by the SSE writer tests: a request that records what it is sent."""

from __future__ import annotations

from typing import Any

from twisted.web.test.requesthelper import DummyRequest


class Request(DummyRequest):
    """DummyRequest that records a push producer instead of looping on it."""

    def __init__(self) -> None:
        super().__init__([b""])
        self.producer: Any = None

    def registerProducer(self, prod: Any, s: Any) -> None:
        self.producer = prod

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        assert not self.finished, "write after finish"
        super().write(data)

    def finish(self) -> None:
        assert not self.finished, "finish twice"
        super().finish()
