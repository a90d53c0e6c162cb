"""The pure parts of ``scripts/bench.py`` and the raw-Twisted floor relay it measures.

The arithmetic (percentiles, medians over rounds, ratios and differences to direct taken
within a round, CPU per event from short and long streams) and the markdown table are
checked on hand-made rounds; the floor relays real bytes both ways over loopback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import defer, protocol, reactor

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench
import bench_floor


def test_percentiles_and_median_ignore_what_is_not_a_number() -> None:
    assert bench.pct([3.0, 1.0, 2.0], 50) == 2.0
    assert bench.pct(list(range(101)), 99) == 99
    assert bench.pct([], 50) != bench.pct([], 50)  # NaN
    assert bench.median([5.0, None, 1.0, float("nan"), 3.0]) == 3.0
    assert bench.median([None]) is None
    assert bench.ratio(3.0, 4.0) == 0.75
    assert bench.ratio(3.0, 0.0) is None
    assert bench.difference(None, 1.0) is None


def test_cpu_per_event_is_the_long_minus_short_stream_cost_over_the_extra_events() -> None:
    # 1-token streams: 4 events for 1 ms; 64-token streams: 67 events for 7.3 ms.
    assert bench.per_event_cpu(0.001, 4, 0.0073, 67) == pytest_approx(0.0001)
    assert bench.per_event_cpu(0.001, 4, 0.002, 4) is None
    assert bench.per_event_cpu(None, 4, 0.002, 67) is None


def pytest_approx(value: float) -> Any:
    import pytest

    return pytest.approx(value, rel=1e-9)


def _round(scale: float, rps: float, ttft_ms: list[float]) -> dict[str, Any]:
    ttft = [t / 1000 for t in ttft_ms]
    return {
        "cpu1": 0.001 * scale,
        "ev1": 4.0,
        "cpu64": 0.001 * scale + 63 * 0.00002 * scale,
        "ev64": 67.0,
        "rps": rps,
        "kib_stream": 16.0 * scale,
        "ttft": {"c1": ttft, "b16": ttft},
    }


def test_summary_takes_medians_over_rounds_of_per_round_differences_and_ratios() -> None:
    rounds = [
        {"direct": _round(0, 100.0, [20, 21]), "peer": _round(1, 50.0, [21, 23])},
        {"direct": _round(0, 200.0, [30, 30]), "peer": _round(2, 50.0, [40, 40])},
        {"direct": _round(0, 100.0, [20, 20]), "peer": _round(3, 80.0, [22, 22])},
    ]
    summary = bench.summarize(rounds, ["direct", "peer"])
    peer = summary["peer"]
    assert peer["rounds"] == 3
    assert peer["cpu1_us"] == pytest_approx(2000)  # median of 1000, 2000, 3000
    assert peer["cpu_event_us"] == pytest_approx(40)  # median of 20, 40, 60
    # Ratios per round: 0.5, 0.25, 0.8 -> median 0.5 (not 60 / 133).
    assert peer["rps_ratio"] == pytest_approx(0.5)
    # Added p50 per round: +1 ms (21 vs 20: nearest rank of two is the upper), +10, +2.
    assert peer["c1_p50_ms"] == pytest_approx(2.0)
    assert peer["c1_max_ms"] == pytest_approx(23.0)
    assert summary["direct"]["rps_ratio"] == pytest_approx(1.0)


def test_table_has_one_row_per_peer_and_says_why_a_peer_is_missing() -> None:
    rounds = [{"direct": _round(0, 100.0, [20]), "peer": _round(1, 50.0, [21])}]
    text = bench.markdown_table(bench.summarize(rounds, ["direct", "peer"]), {"nginx": "no nginx"})
    lines = text.splitlines()
    assert lines[0].startswith("| | CPU per 1-token stream (c=16)")
    assert "| peer | 1000 µs | 20.0 µs | +1.00 ms | +1.00 ms | 0.50 (50/s) | 16.0 |" in lines
    assert "| direct | — | — | — | — | 1.00 (100/s) | — |" in lines
    assert "| nginx | not available: no nginx | | | | | |" in lines
    # The burst table: a row per peer, the added p50/p99 and the slowest start.
    assert any(line.startswith("| peer | ") and "+1.0 / +1.0; max 21" in line for line in lines)


class _Backend(protocol.Protocol):
    """Answers each chunk with its upper case, and closes after ``bye``."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data.upper())
        if data.endswith(b"bye"):
            self.transport.loseConnection()


class _Client(protocol.Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.closed: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"hello " * 1000 + b"bye")

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(self.received)


@pytest_twisted.ensureDeferred
async def test_the_floor_relays_bytes_both_ways_and_passes_the_close_on() -> None:
    backend = protocol.ServerFactory.forProtocol(_Backend)
    upstream = reactor.listenTCP(0, backend, interface="127.0.0.1")  # type: ignore[attr-defined]
    target = ("127.0.0.1", upstream.getHost().port)
    relay = reactor.listenTCP(  # type: ignore[attr-defined]
        0, bench_floor.RelayFactory(reactor, target), interface="127.0.0.1"
    )
    try:
        client = _Client()
        await protocol.ClientCreator(reactor, lambda: client).connectTCP(
            "127.0.0.1", relay.getHost().port
        )
        # The backend only closes once it saw the whole request, so what arrives is the
        # answer to every byte sent, in order, and the close came through the relay.
        received = await client.closed
        assert received == b"HELLO " * 1000 + b"BYE"
    finally:
        await relay.stopListening()
        await upstream.stopListening()


def test_cpu_between_counts_exited_threads_through_utime_and_new_processes_whole() -> None:
    before = {
        10: (1.00, {"10": 1_000_000_000, "11": 500_000_000}),  # threads survive: schedstat
        20: (2.00, {"20": 2_000_000_000, "21": 100}),  # thread 21 exits: ticks
    }
    after = {
        10: (1.10, {"10": 1_000_250_000, "11": 500_000_000}),
        20: (2.30, {"20": 2_000_000_000}),
        30: (0.05, {"30": 50_000_000}),  # born in between: all of its time
    }
    assert bench.cpu_between(before, after) == pytest_approx(0.00025 + 0.30 + 0.05)
