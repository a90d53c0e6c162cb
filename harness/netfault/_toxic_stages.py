"""What each toxic type does to the bytes: one ``Stage`` subclass per type, and ``STAGES``.

Each class implements one row of the table in ``_toxic``, with Toxiproxy's semantics;
timing goes through the link's injected clock, randomness through ``link.rng_for``.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.interfaces import IDelayedCall

from harness.netfault._stage import Pipe, Scheduled, Stage, StageHost, cancel_timer
from harness.netfault._toxic import Toxic


class Latency(Scheduled):
    """Each chunk leaves ``latency`` +/- ``jitter`` ms after it arrived, in order."""

    def plan(self, data: bytes, now: float) -> Iterable[tuple[float, bytes]]:
        delay_ms = self.toxic.attributes["latency"]
        jitter = self.toxic.attributes["jitter"]
        if jitter > 0:
            delay_ms += self.link.rng_for(self.toxic).randrange(2 * jitter) - jitter
        due = max(self.free_at, now + max(0, delay_ms) / 1000.0)
        self.free_at = due
        return [(due, data)]


class Bandwidth(Scheduled):
    """At most ``rate`` KB/s; big writes go out in 100 ms pieces like Toxiproxy."""

    def plan(self, data: bytes, now: float) -> Iterable[tuple[float, bytes]]:
        rate = self.toxic.attributes["rate"]
        if rate <= 0:
            self.free_at = max(self.free_at, now)
            return [(self.free_at, data)]
        bytes_per_second = rate * 1000
        step = rate * 100  # bytes in 100 ms
        out = []
        for i in range(0, len(data), step):
            piece = data[i : i + step]
            # The piece leaves once its transmission time has elapsed (Toxiproxy
            # sleeps before it sends), counted from when the link is free.
            self.free_at = max(self.free_at, now) + len(piece) / bytes_per_second
            out.append((self.free_at, piece))
        return out


class Slicer(Scheduled):
    """Split each write into ``average_size`` +/- ``size_variation`` byte pieces,
    ``delay`` µs apart (Toxiproxy's bisection algorithm)."""

    def _cuts(self, length: int) -> list[tuple[int, int]]:
        avg = self.toxic.attributes["average_size"]
        var = self.toxic.attributes["size_variation"]
        rng = self.link.rng_for(self.toxic)
        out: list[tuple[int, int]] = []
        stack = [(0, length)]
        while stack:
            start, end = stack.pop()
            if (end - start) - avg <= var:
                out.append((start, end))
                continue
            mid = start + (end - start) // 2
            if var > 0:
                mid += rng.randrange(2 * var) - var
            # Right half pushed first so the left half is emitted first.
            stack.append((mid, end))
            stack.append((start, mid))
        return out

    def plan(self, data: bytes, now: float) -> Iterable[tuple[float, bytes]]:
        gap = self.toxic.attributes["delay"] / 1e6
        t = max(self.free_at, now)
        out = []
        for start, end in self._cuts(len(data)):
            out.append((t, data[start:end]))
            t += gap
        self.free_at = t
        return out


class SlowClose(Stage):
    """Data passes at once; the end-of-stream waits ``delay`` ms."""

    timer: IDelayedCall | None = None

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.timer = self.link.clock.callLater(self.toxic.attributes["delay"] / 1000.0, self._close)

    def _close(self) -> None:
        self.timer = None
        self.out.end()

    def detach(self) -> tuple[bytes, bool]:
        # A pending close has not been passed on yet: the next stage gets it now.
        pending = cancel_timer(self.timer)
        self.timer = None
        return b"", pending

    def cancel(self) -> None:
        self.detach()


class Timeout(Stage):
    """Drop all data; after ``timeout`` ms (counted from when the toxic took effect on
    this connection) end the stream. 0 = hold forever. Removing it closes the
    connection, like Toxiproxy (the dropped bytes make the stream unusable)."""

    timer: IDelayedCall | None = None

    def __init__(self, toxic: Toxic, link: StageHost, out: Pipe) -> None:
        super().__init__(toxic, link, out)
        timeout = toxic.attributes["timeout"]
        if timeout > 0:
            self.timer = link.clock.callLater(timeout / 1000.0, self.end)

    def write(self, data: bytes) -> None:
        self.link.dropped(len(data))

    def end(self) -> None:
        self.cancel()
        super().end()

    def detach(self) -> tuple[bytes, bool]:
        self.cancel()
        if self.ended:
            return b"", False
        self.ended = True
        return b"", True

    def cancel(self) -> None:
        cancel_timer(self.timer)
        self.timer = None


class ResetPeer(Stage):
    """The first data (or end-of-stream) is dropped and arms a timer; after
    ``timeout`` ms both sockets are reset (RST). Later data is dropped too. Once armed
    the reset happens even if the toxic is removed (the stream already lost bytes)."""

    timer: IDelayedCall | None = None
    armed = False

    def _arm(self) -> None:
        if self.armed:
            return
        self.armed = True
        timeout = self.toxic.attributes["timeout"]
        if timeout == 0:
            self.link.reset_connection()
        else:
            self.timer = self.link.clock.callLater(timeout / 1000.0, self.link.reset_connection)

    def write(self, data: bytes) -> None:
        self.link.dropped(len(data))
        self._arm()

    def end(self) -> None:
        self.ended = True
        self._arm()

    def detach(self) -> tuple[bytes, bool]:
        # Not armed: nothing was dropped, the stream continues untouched.
        return b"", False

    def cancel(self) -> None:
        cancel_timer(self.timer)
        self.timer = None


class LimitData(Stage):
    """Pass ``bytes`` bytes in total, then end the stream (the connection closes)."""

    sent = 0

    def write(self, data: bytes) -> None:
        if self.ended:
            self.link.dropped(len(data))
            return
        remaining = self.toxic.attributes["bytes"] - self.sent
        piece = data[: max(0, remaining)]
        if len(piece) < len(data):
            self.link.dropped(len(data) - len(piece))
        if piece:
            self.sent += len(piece)
            self.out.write(piece)
        if self.sent >= self.toxic.attributes["bytes"]:
            self.end()


#: Toxic type -> the stage that implements it.
STAGES: dict[str, type[Stage]] = {
    "latency": Latency,
    "bandwidth": Bandwidth,
    "slicer": Slicer,
    "slow_close": SlowClose,
    "timeout": Timeout,
    "reset_peer": ResetPeer,
    "limit_data": LimitData,
}
