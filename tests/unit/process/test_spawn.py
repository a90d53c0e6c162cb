"""LineReader and the exit-status decoder, fed by hand (the wrapper itself: integration)."""

from __future__ import annotations

import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import error as ierror
from twisted.python.failure import Failure

from server_core.process.spawn import MAX_LINE, LineReader, describe_exit, exit_status


class Recorded:
    """A LineReader whose callbacks append to lists."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.exits: list[int | None] = []
        self.ends: list[int | None] = []
        self.reader = LineReader(self.lines.append, self.exits.append, self.ends.append)


def test_lines_per_pipe_across_chunks_without_cr() -> None:
    rec = Recorded()
    rec.reader.childDataReceived(1, b"out one\r\nout t")
    rec.reader.childDataReceived(2, b"err one\n")
    rec.reader.childDataReceived(1, b"wo\n")
    assert rec.lines == ["out one", "err one", "out two"]


def test_a_line_without_newline_is_cut_at_max_line_and_flushed_at_the_end() -> None:
    rec = Recorded()
    rec.reader.childDataReceived(2, b"x" * (2 * MAX_LINE + 10))
    assert rec.lines == ["x" * MAX_LINE, "x" * MAX_LINE]
    rec.reader.childDataReceived(1, b"half")
    reason = Failure(ierror.ProcessDone(0))
    rec.reader.processExited(reason)
    assert rec.exits == [0] and rec.ends == []
    rec.reader.processEnded(reason)
    assert sorted(rec.lines[2:]) == ["half", "x" * 10]
    assert rec.ends == [0]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    rec = Recorded()
    rec.reader.childDataReceived(2, b"caf\xc3\n\xff\n")
    assert rec.lines == ["caf\ufffd", "\ufffd"]


@given(st.lists(st.binary(max_size=40), max_size=8))
def test_chunking_never_changes_the_lines(chunks: list[bytes]) -> None:
    data = b"".join(chunks)
    rec = Recorded()
    for chunk in chunks:
        rec.reader.childDataReceived(1, chunk)
    rec.reader.processEnded(Failure(ierror.ProcessDone(0)))
    whole = Recorded()
    whole.reader.childDataReceived(1, data)
    whole.reader.processEnded(Failure(ierror.ProcessDone(0)))
    assert rec.lines == whole.lines


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (ierror.ProcessDone(0), 0),
        (ierror.ProcessTerminated(exitCode=1), 1),
        (ierror.ProcessTerminated(exitCode=None, signal=signal.SIGKILL), -signal.SIGKILL),
        (ierror.ProcessTerminated(exitCode=None, signal=None), None),
        (RuntimeError("not an exit"), None),
    ],
)
def test_exit_status(value: Exception, status: int | None) -> None:
    assert exit_status(Failure(value)) == status


def test_describe_exit() -> None:
    assert describe_exit(None) == "exited"
    assert describe_exit(0) == "exited with status 0"
    assert describe_exit(127) == "exited with status 127"
    assert describe_exit(-signal.SIGSEGV) == "was killed by SIGSEGV"
    assert describe_exit(-99) == "was killed by signal 99"
