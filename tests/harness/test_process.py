"""harness._process without a child: lines from chunks, waits, exit statuses, stop, RSS."""

from __future__ import annotations

import io
import os
import signal
from typing import Any, TypeVar

import pytest
from twisted.internet import defer
from twisted.internet import error as ierror
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from harness import _process
from harness._process import LineProcessProtocol, exit_status, rss_kib

T = TypeVar("T")


class FakeTransport:
    """Records the signals sent; ``gone`` makes them raise like a child that just exited."""

    pid = 4242

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.gone = False

    def signalProcess(self, name: str) -> None:
        if self.gone:
            raise ierror.ProcessExitedAlready()
        self.sent.append(name)


class Recorder(LineProcessProtocol):
    def __init__(self, clock: Clock, keep: int | None = None) -> None:
        super().__init__("child", clock, keep=keep)
        self.seen: list[tuple[int, str]] = []
        self.ended: list[int] = []

    def line_received(self, fd: int, line: str) -> None:
        self.seen.append((fd, line))

    def child_exited(self, status: int) -> None:
        self.ended.append(status)


def make(keep: int | None = None) -> tuple[Recorder, FakeTransport, Clock]:
    clock = Clock()
    proto = Recorder(clock, keep)
    transport = FakeTransport()
    proto.makeConnection(transport)
    return proto, transport, clock


def now(d: defer.Deferred[T]) -> T:
    """The result of a Deferred that has fired (its failure raised)."""
    got: list[T | Failure] = []
    d.addBoth(got.append)
    assert got, "the Deferred has not fired"
    if isinstance(got[0], Failure):
        got[0].raiseException()
    return got[0]


def ended(code: int | None = 0, sig: int | None = None) -> Failure:
    if code == 0 and sig is None:
        return Failure(ierror.ProcessDone(0))
    return Failure(ierror.ProcessTerminated(exitCode=code, signal=sig))


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        (ended(0), 0),
        (ended(3), 3),
        (ended(None, signal.SIGKILL), -signal.SIGKILL),
        (ended(None, None), 0),
    ],
)
def test_exit_status_is_the_code_or_minus_the_signal(reason: Failure, status: int) -> None:
    assert exit_status(reason) == status


def test_chunks_become_lines_per_stream_and_a_partial_line_waits() -> None:
    proto, _, _ = make()
    proto.childDataReceived(2, b"one\r\ntw")
    proto.childDataReceived(1, b"out")
    assert proto.lines == ["one"]
    proto.childDataReceived(2, b"o\n")
    proto.childDataReceived(1, b"put\n")
    assert proto.seen == [(2, "one"), (2, "two"), (1, "output")]
    proto.childDataReceived(1, b"last, no newline")
    proto.processEnded(ended(0))
    assert proto.lines == ["one", "two", "output", "last, no newline"]
    assert proto.ended == [0] and proto.exited and proto.exit_status == 0


def test_keep_holds_only_the_last_lines() -> None:
    proto, _, _ = make(keep=2)
    proto.childDataReceived(1, b"a\nb\nc\n")
    assert proto.lines == ["b", "c"]
    assert [line for _, line in proto.seen] == ["a", "b", "c"]


def test_when_line_sees_past_and_future_lines() -> None:
    proto, _, _ = make()
    proto.childDataReceived(1, b"listening on port 80\n")
    past = proto.when_line(r"port (\d+)")
    future = proto.when_line(r"ready")
    assert now(past).group(1) == "80"
    assert not future.called
    proto.childDataReceived(2, b"now ready\n")
    assert now(future).string == "now ready"


def test_a_wait_for_a_line_fails_when_the_child_exits_first() -> None:
    proto, _, _ = make()
    proto.childDataReceived(2, b"boom\n")
    waiting = proto.when_line("never")
    proto.processEnded(ended(1))
    failures: list[Failure] = []
    waiting.addErrback(failures.append)
    after = proto.when_line("never")
    after.addErrback(failures.append)
    assert [str(f.value) for f in failures] == ["child exited:\nboom"] * 2


def test_waits_time_out_on_the_reactor_and_are_forgotten() -> None:
    proto, _, clock = make()
    line = proto.when_line("never", timeout=1.0)
    exit_ = proto.when_exited(timeout=1.0)
    failures: list[Failure] = []
    line.addErrback(failures.append)
    exit_.addErrback(failures.append)
    clock.advance(1.0)
    assert [f.check(defer.TimeoutError) for f in failures] == [defer.TimeoutError] * 2
    proto.childDataReceived(1, b"never\n")
    proto.processEnded(ended(0))  # nothing left to fire twice


def test_when_exited_fires_with_the_status_before_and_after() -> None:
    proto, _, _ = make()
    waiting = proto.when_exited()
    proto.processEnded(ended(None, signal.SIGTERM))
    assert now(waiting) == -signal.SIGTERM
    assert now(proto.when_exited()) == -signal.SIGTERM


def test_signal_takes_names_and_numbers_and_ignores_a_gone_child() -> None:
    proto, transport, _ = make()
    proto.signal(signal.SIGTERM)
    proto.signal("SIGINT")
    proto.signal("KILL")
    assert transport.sent == ["TERM", "INT", "KILL"]
    transport.gone = True
    proto.signal("TERM")  # exited, processEnded not yet delivered: no error
    proto.processEnded(ended(0))
    transport.gone = False
    proto.signal("TERM")
    assert transport.sent == ["TERM", "INT", "KILL"]
    assert proto.pid == FakeTransport.pid


def test_terminate_ends_by_itself_after_sigterm() -> None:
    proto, transport, clock = make()
    stopping = defer.ensureDeferred(proto.terminate(5.0))
    assert transport.sent == ["TERM"]
    clock.advance(1.0)
    proto.processEnded(ended(0))
    assert now(stopping) == (0, True)
    assert now(defer.ensureDeferred(proto.terminate(5.0))) == (0, True)


def test_terminate_kills_after_the_grace() -> None:
    proto, transport, clock = make()
    stopping = defer.ensureDeferred(proto.terminate(5.0, kill_grace=2.0))
    clock.advance(5.0)
    assert transport.sent == ["TERM", "KILL"]
    proto.processEnded(ended(None, signal.SIGKILL))
    assert now(stopping) == (-signal.SIGKILL, False)


def test_terminate_gives_up_after_the_kill_grace() -> None:
    proto, _, clock = make()
    stopping = defer.ensureDeferred(proto.terminate(5.0, kill_grace=2.0))
    clock.advance(5.0)
    clock.advance(2.0)
    failures: list[Failure] = []
    stopping.addErrback(failures.append)
    assert failures[0].check(defer.TimeoutError)


def test_rss_kib_reads_vmrss() -> None:
    assert rss_kib(os.getpid()) > 0


def test_rss_kib_without_vmrss_gives_the_default_or_raises(monkeypatch: Any) -> None:
    # A zombie's status has no VmRSS line.
    monkeypatch.setattr(
        _process, "open", lambda path: io.StringIO("Name:\tz\nState:\tZ\n"), raising=False
    )
    assert rss_kib(1, default=0) == 0
    with pytest.raises(RuntimeError, match="no VmRSS for pid 1"):
        rss_kib(1)
