"""Readiness: HttpHealthCheck against a real listening socket, ReadinessPoll on a Clock."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.internet import reactor as _reactor
from twisted.internet.protocol import Factory, Protocol

from server_core.process.health import HttpHealthCheck, ReadinessPoll
from tests.unit.process.support import FakeHealth

reactor: Any = _reactor
pytestmark = pytest.mark.timeout(30)


@pytest_twisted.ensureDeferred
async def test_health_200_without_content_length_counts_as_ready() -> None:
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


class PollRig:
    """A ReadinessPoll on a Clock with a scripted ``/health``; records its outcome."""

    def __init__(self, timeout: float = 5.0, interval: float = 0.1) -> None:
        self.clock = task.Clock()
        self.health = FakeHealth()
        self.outcomes: list[str] = []
        self.poll = ReadinessPoll(
            self.clock,
            self.health,
            timeout=timeout,
            interval=interval,
            on_ready=lambda: self.outcomes.append("ready"),
            on_timeout=lambda: self.outcomes.append("timeout"),
        )


def test_polls_only_once_the_url_is_known_then_until_200() -> None:
    rig = PollRig(interval=0.1)
    rig.clock.advance(1.0)
    assert rig.health.calls == []
    rig.poll.poll("http://127.0.0.1:5555")
    rig.poll.poll("http://127.0.0.1:6666")  # the first port said counts
    assert [url for url, _ in rig.health.calls] == ["http://127.0.0.1:5555"]
    rig.health.answer(503)
    rig.clock.advance(0.1)
    rig.health.answer(None)
    rig.clock.advance(0.1)
    rig.health.answer(200)
    assert rig.outcomes == ["ready"]
    assert len(rig.health.calls) == 3
    assert not rig.clock.getDelayedCalls()  # neither the deadline nor a next poll is left


def test_deadline_fires_once_and_cancels_the_poll_in_flight() -> None:
    rig = PollRig(timeout=2.0)
    rig.poll.poll("http://127.0.0.1:5555")
    in_flight = rig.health.calls[-1][1]
    rig.clock.advance(2.0)
    assert rig.outcomes == ["timeout"]
    assert in_flight.called  # cancelled
    assert not rig.clock.getDelayedCalls()


def test_each_poll_gets_what_is_left_of_the_deadline_within_bounds() -> None:
    timeouts: list[float] = []

    def check(url: str, timeout: float) -> defer.Deferred[int | None]:
        timeouts.append(timeout)
        return defer.succeed(503)

    clock = task.Clock()
    poll = ReadinessPoll(
        clock, check, timeout=3.0, interval=0.99, on_ready=lambda: None, on_timeout=lambda: None
    )
    poll.poll("http://127.0.0.1:5555")  # 3 s left: at most 2
    clock.advance(0.99)  # 2.01 s left
    clock.advance(0.99)  # 1.02 s left
    clock.advance(0.99)  # 0.03 s left: at least 0.05
    assert timeouts == pytest.approx([2.0, 2.0, 1.02, 0.05])


def test_cancel_stops_everything_and_nothing_fires() -> None:
    rig = PollRig()
    rig.poll.poll("http://127.0.0.1:5555")
    rig.poll.cancel()
    rig.poll.cancel()  # idempotent
    assert rig.health.calls[-1][1].called
    rig.clock.advance(10.0)
    assert rig.outcomes == [] and not rig.clock.getDelayedCalls()
    rig.poll.poll("http://127.0.0.1:5555")  # too late: nothing starts again
    assert len(rig.health.calls) == 1
