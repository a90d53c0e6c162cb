"""UpstreamSseReader's own contract, on a Clock, with the smallest relay that records it.

The reader is shared by ``ForwardedSse`` and the Ollama ``NdjsonRelay``; these tests pin
what it promises any relay (issue 18's mutation survivors): the exception a bug raised
reaches ``_internal_failure``, silence from the very start is a stall, every stall
verdict first reads the data already waiting, a reader without an idle timeout still ends
honestly, an ended relay is never judged, and pacing before the body is harmless.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from server_core.sse import Event
from server_core.sse.upstream_reader import UpstreamSseReader
from tests.unit.sse.test_forwarded import Response


class Recorder(UpstreamSseReader):
    """A relay that records what the reader hands it; ``explode`` makes it a buggy one."""

    def __init__(self, clock: Clock, idle_timeout: float | None = 30.0) -> None:
        self.open = True
        self.events: list[Event] = []
        self.failed: list[tuple[str, str]] = []
        self.bugs: list[Exception | None] = []
        self.explode: Exception | None = None
        self._reader_setup(clock, idle_timeout)

    @property
    def _open(self) -> bool:
        return self.open

    def _relay_event(self, event: Any) -> bool:
        if self.explode is not None:
            raise self.explode
        self.events.append(event)
        return True

    def _fail(self, what: str, cause: str) -> None:
        self.failed.append((what, cause))
        self.open = False
        self._abort_upstream()

    def _internal_failure(self, exc: Exception) -> None:
        self.bugs.append(exc)
        self.open = False
        self._abort_upstream()


def reading(idle: float | None = 30.0) -> tuple[Recorder, Response, Clock]:
    clock = Clock()
    clock.advance(100.0)
    reader, response = Recorder(clock, idle), Response()
    reader._start_reading(response)  # type: ignore[arg-type]
    return reader, response, clock


def aborted(response: Response) -> bool:
    return bool(response.transport._producer.aborted)


EVENT = b'data: {"n": 1}\n\n'


def test_a_bug_while_relaying_data_reaches_internal_failure_with_its_exception() -> None:
    reader, response, _ = reading()
    bug = RuntimeError("relay bug")
    reader.explode = bug
    response.send(EVENT)
    assert reader.bugs == [bug] and reader.failed == []
    assert aborted(response)


def test_a_bug_while_handling_the_close_reaches_internal_failure_with_its_exception() -> None:
    reader, response, _ = reading()
    bug = RuntimeError("fail bug")

    def broken_fail(what: str, cause: str) -> None:
        raise bug

    reader._fail = broken_fail  # type: ignore[method-assign]
    response.end()
    assert reader.bugs == [bug]


def test_silence_from_the_very_start_is_a_stall() -> None:
    reader, response, clock = reading(idle=30.0)
    clock.advance(29.9)
    assert reader.failed == []
    clock.advance(0.1)
    assert reader.failed == [("sent no data for 30 s", "stall")] and aborted(response)
    assert reader.bugs == [] and clock.getDelayedCalls() == []


def test_data_waiting_when_the_timer_fires_clears_every_stall_verdict_not_only_the_first() -> None:
    # The reactor runs timers before reads: each time the timer finds 30 s of silence,
    # the data read in that same turn (scheduled here for the same instant) still counts.
    reader, response, clock = reading(idle=30.0)
    response.send(EVENT)
    for _ in range(3):
        clock.callLater(30.0, response.send, EVENT)
        clock.advance(30.0)
        assert reader.failed == []
    clock.advance(30.0)
    assert reader.failed == [("sent no data for 30 s", "stall")]
    assert len(reader.events) == 4


def test_without_an_idle_timeout_a_clean_close_is_still_judged_honestly() -> None:
    reader, response, clock = reading(idle=None)
    assert clock.getDelayedCalls() == []
    response.send(EVENT)
    clock.advance(10_000.0)
    assert reader.failed == []
    response.end()
    assert reader.bugs == []
    assert reader.failed == [("closed the stream before it was complete", "upstream_closed")]


def test_without_an_idle_timeout_a_reset_is_still_judged_honestly() -> None:
    reader, response, _ = reading(idle=None)
    response.end(Failure(ConnectionLost()))
    assert reader.bugs == []
    assert reader.failed == [("connection lost in the middle of the stream", "upstream_reset")]


def test_a_relay_that_ended_by_itself_is_never_judged_stalled() -> None:
    # A relay may stop wanting data without aborting (it ended on its own terms);
    # the idle timer that still fires then says nothing.
    reader, response, clock = reading(idle=30.0)
    response.send(EVENT)
    reader.open = False
    clock.advance(30.0)
    clock.advance(0)
    clock.advance(30.0)
    clock.advance(0)
    assert reader.failed == [] and reader.bugs == []
    assert clock.getDelayedCalls() == []


def test_pacing_and_stopping_before_the_body_arrives_is_harmless() -> None:
    clock = Clock()
    reader = Recorder(clock)
    reader.pauseProducing()
    reader.resumeProducing()
    reader.stopProducing()
    assert reader.failed == [] and reader.bugs == []


def test_a_slow_client_pauses_upstream_and_its_hold_never_counts_as_silence() -> None:
    reader, response, clock = reading(idle=30.0)
    response.send(EVENT)
    reader.pauseProducing()
    assert response.transport.paused
    clock.advance(45.0)
    clock.advance(0)
    assert reader.failed == []
    reader.resumeProducing()
    assert not response.transport.paused
    clock.advance(29.0)
    assert reader.failed == []
    clock.advance(1.0)
    clock.advance(0)
    assert reader.failed == [("sent no data for 30 s", "stall")]
