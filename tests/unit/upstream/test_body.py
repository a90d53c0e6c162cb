"""read_complete_body on real Agent responses: complete, too large, silent, cut, cancelled."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

from server_core.upstream import BodyIncomplete, abort_body_transport, read_complete_body
from tests.unit.upstream.support import (
    close_cleanly,
    failure_of,
    memory_agent,
    response_with,
    result_of,
)


def read(
    head: bytes, *, limit: int = 100, idle: float | None = 2.0, close_ends_body: bool = False
) -> tuple[Any, ...]:
    """A body read started on a response with ``head``: (Deferred, endpoints, clock)."""
    agent, endpoints, clock = memory_agent()
    response = response_with(head, agent, endpoints)
    d = read_complete_body(
        response, limit=limit, idle_timeout=idle, clock=clock, close_ends_body=close_ends_body
    )
    return d, endpoints, clock


def aborted(endpoints: Any) -> bool:
    return bool(endpoints.connections[-1][1].disconnected)  # set by abortConnection only


def test_a_body_with_a_length_is_read_whole() -> None:
    d, endpoints, _ = read(b"HTTP/1.1 200 OK\r\nContent-Length: 11")
    endpoints.last.dataReceived(b"hello ")
    assert not d.called
    endpoints.last.dataReceived(b"world")
    assert result_of(d) == b"hello world"
    assert not aborted(endpoints)


def test_a_chunked_body_is_read_whole() -> None:
    d, endpoints, _ = read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked")
    endpoints.last.dataReceived(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert result_of(d) == b"abcde"


def test_a_body_ended_by_a_close_is_not_complete() -> None:
    # The policy: without a length or a last chunk, a close may have cut the body.
    d, endpoints, _ = read(b"HTTP/1.1 200 OK\r\nConnection: close")
    endpoints.last.dataReceived(b'{"ok": tr')
    close_cleanly(endpoints)
    error = failure_of(d)
    assert isinstance(error, BodyIncomplete)
    assert str(error) == "connection lost before the body was complete"


def test_a_status_only_reader_takes_a_body_ended_by_a_clean_close() -> None:
    d, endpoints, _ = read(b"HTTP/1.1 200 OK\r\nConnection: close", close_ends_body=True)
    endpoints.last.dataReceived(b'{"status":"ok"}')
    close_cleanly(endpoints)
    assert result_of(d) == b'{"status":"ok"}'


def test_a_body_cut_by_a_reset_is_not_complete() -> None:
    d, endpoints, _ = read(b"HTTP/1.1 200 OK\r\nContent-Length: 10")
    endpoints.last.dataReceived(b"abc")
    endpoints.last.connectionLost(Failure(ConnectionLost()))
    assert isinstance(failure_of(d), BodyIncomplete)


def test_a_body_over_the_limit_fails_and_aborts_the_connection() -> None:
    d, endpoints, _ = read(b"HTTP/1.1 200 OK\r\nContent-Length: 200", limit=5)
    endpoints.last.dataReceived(b"abcdef")
    error = failure_of(d)
    assert isinstance(error, BodyIncomplete) and str(error) == "body larger than 5 bytes"
    assert aborted(endpoints)


def test_a_silent_body_fails_after_the_idle_timeout_and_aborts() -> None:
    d, endpoints, clock = read(b"HTTP/1.1 200 OK\r\nContent-Length: 10")
    clock.advance(1.5)
    endpoints.last.dataReceived(b"abc")  # data rearms the deadline
    clock.advance(1.5)
    assert not d.called
    clock.advance(0.5)
    error = failure_of(d)
    assert isinstance(error, BodyIncomplete) and str(error) == "nothing received for 2 s"
    assert aborted(endpoints)


def test_no_idle_timeout_waits_for_ever() -> None:
    d, endpoints, clock = read(b"HTTP/1.1 200 OK\r\nContent-Length: 3", idle=None)
    clock.advance(10_000)
    assert not d.called and not clock.getDelayedCalls()
    endpoints.last.dataReceived(b"abc")
    assert result_of(d) == b"abc"


def test_cancelling_the_read_aborts_the_connection() -> None:
    d, endpoints, clock = read(b"HTTP/1.1 200 OK\r\nContent-Length: 10")
    d.cancel()
    assert isinstance(failure_of(d), defer.CancelledError)
    assert aborted(endpoints) and not clock.getDelayedCalls()


class _Proxy:
    """A body transport whose connection is already gone: it can only stop."""

    stopped = False

    def stopProducing(self) -> None:
        self.stopped = True


@pytest.mark.parametrize("transport", [None, _Proxy()], ids=["no-transport", "no-connection"])
def test_abort_without_a_connection_under_it_stops_what_is_there(transport: Any) -> None:
    abort_body_transport(transport)
    assert transport is None or transport.stopped
