"""The liveness probe of a ready child, on a Clock: misses, the verdict, the kill, the ends.

``LivenessProbe`` alone first (the counting and the schedule), then inside
``LlamaServerProcess`` (ready -> failed at once, the group SIGKILLed, the exit handled,
a fresh start), then the ``llama_server.liveness_*`` settings. A frozen child is played
by a ``/health`` that never answers and times out on the Clock, as ``HttpHealthCheck``'s
``addTimeout`` does.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from twisted.internet import task

from server_core.config import LlamaSettings, parse_config
from server_core.errors import ConfigError
from server_core.process.health import LivenessProbe
from tests.unit.process.support import FakeHealth, Rig, result_of

URL = "http://127.0.0.1:5555"


def probe(clock: task.Clock, check: FakeHealth, verdicts: list[str], **kw: float) -> LivenessProbe:
    return LivenessProbe(
        clock,
        check,
        URL,
        interval=kw.get("interval", 3.0),
        timeout=kw.get("timeout", 2.0),
        misses=int(kw.get("misses", 3)),
        on_dead=verdicts.append,
        alias="m",
    )


# -- LivenessProbe ----------------------------------------------------------------------


def test_misses_in_a_row_give_one_verdict_and_stop() -> None:
    clock = task.Clock()
    frozen = FakeHealth()
    frozen.frozen_on = clock
    verdicts: list[str] = []
    p = probe(clock, frozen, verdicts)
    clock.pump([0.5] * 60)  # 30 s
    assert frozen.frozen_asked == [3.0, 6.0, 9.0]  # every interval; the third miss is the last
    assert verdicts == ["stopped answering /health (3 probes in a row: no answer within 2 s)"]
    assert not p.active
    assert not clock.getDelayedCalls()


def test_a_slow_answer_is_forgiven_and_a_200_resets_the_count() -> None:
    clock = task.Clock()
    health = FakeHealth()
    verdicts: list[str] = []
    probe(clock, health, verdicts)
    for status in (None, None, 200, None, 503, 200, None, None):
        clock.advance(3.0)
        health.answer(status)
    assert verdicts == [] and len(health.calls) == 8
    clock.advance(3.0)
    health.answer(None)  # third in a row
    assert verdicts == ["stopped answering /health (3 probes in a row: no answer within 2 s)"]


def test_every_miss_is_counted_even_the_forgiven_ones() -> None:
    clock = task.Clock()
    health = FakeHealth()
    verdicts: list[str] = []
    p = probe(clock, health, verdicts)
    for status in (None, 200, 503, None, 200):
        clock.advance(3.0)
        health.answer(status)
    assert (p.missed, p.missed_total) == (0, 3)  # in a row: none now; in all: three
    assert verdicts == []


def test_probes_never_overlap() -> None:
    clock = task.Clock()
    health = FakeHealth()
    probe(clock, health, [], interval=1.0, timeout=5.0)
    clock.advance(1.0)
    assert len(health.calls) == 1
    clock.advance(4.0)  # unanswered: no second probe on top of it
    assert len(health.calls) == 1
    health.answer(200)  # late: the next one goes at once (the interval has passed)
    clock.advance(0)
    assert len(health.calls) == 2


def test_cancel_drops_the_timer_and_the_probe_in_flight() -> None:
    clock = task.Clock()
    health = FakeHealth()
    verdicts: list[str] = []
    p = probe(clock, health, verdicts, misses=1)
    clock.advance(3.0)
    in_flight = health.calls[-1][1]
    p.cancel()
    assert in_flight.called  # cancelled, its late answer ignored
    assert verdicts == [] and not clock.getDelayedCalls()


# -- in LlamaServerProcess ----------------------------------------------------------------


def frozen_rig(tmp_path: Path, interval: float = 3.0, timeout: float = 2.0, misses: int = 3) -> Rig:
    """A ready child (the default liveness settings unless given) that freezes at once."""
    rig = Rig(
        tmp_path, liveness_interval=interval, liveness_timeout=timeout, liveness_misses=misses
    )
    rig.make_ready()
    rig.health.frozen_on = rig.clock
    return rig


def test_a_hung_child_is_failed_killed_and_replaced(tmp_path: Path) -> None:
    rig = frozen_rig(tmp_path)
    exited = rig.proc.when_exited()
    seen: list[float] = []
    rig.proc.on_state = lambda p, old, new: seen.append(rig.clock.seconds())
    rig.clock.pump([0.25] * 60)  # 15 s
    assert rig.proc.state == "failed"
    assert rig.health.frozen_asked == [3.0, 6.0, 9.0]
    assert seen == [11.0]  # the third miss: within the default 15 s
    assert rig.states == [("stopped", "starting"), ("starting", "ready")]  # then on_state swapped
    assert rig.proc.last_error == (
        "model 'm' stopped answering /health (3 probes in a row: no answer within 2 s); "
        "it was killed"
    )
    pid = 4_100_001
    assert rig.spawner.signals == [(pid, signal.SIGKILL)]  # at once, no SIGTERM grace
    assert rig.proc.pid == pid and not exited.called  # not reaped yet
    rig.spawner.exit(None, sig=9)
    assert result_of(exited) == -9
    assert rig.proc.state == "failed" and rig.proc.pid is None
    assert seen == [11.0]  # told once
    assert list((tmp_path / "run").glob("*.json")) == []
    assert not rig.clock.getDelayedCalls()
    again = rig.proc.start()
    assert len(rig.spawner.protocols) == 2 and rig.proc.state == "starting"
    assert not again.called


def test_start_and_stop_while_the_hung_child_is_reaped(tmp_path: Path) -> None:
    rig = frozen_rig(tmp_path, interval=0.5, timeout=0.25, misses=2)
    rig.clock.pump([0.05] * 30)
    assert rig.proc.state == "failed" and rig.proc.pid is not None
    restart = rig.proc.start()  # waits for the exit, then a fresh child
    assert len(rig.spawner.protocols) == 1
    rig.spawner.exit(None, sig=9)
    assert len(rig.spawner.protocols) == 2 and rig.proc.state == "starting"
    rig.health.frozen_on = None  # the new child answers
    rig.spawner.say("listening on http://127.0.0.1:5556")
    rig.health.answer(200)
    assert result_of(restart) is None and rig.proc.state == "ready"
    stop = rig.proc.stop()
    rig.spawner.exit(0)
    assert result_of(stop) == 0


def test_stop_and_crash_end_the_probe(tmp_path: Path) -> None:
    rig = Rig(tmp_path, liveness_interval=1.0, liveness_timeout=0.5, liveness_misses=2)
    rig.make_ready()
    rig.clock.advance(1.0)
    assert len(rig.health.calls) == 2  # readiness, then liveness
    rig.health.answer(200)
    rig.proc.stop()
    rig.spawner.exit(0)
    calls = len(rig.health.calls)
    rig.clock.pump([0.5] * 20)
    assert len(rig.health.calls) == calls and not rig.clock.getDelayedCalls()

    rig.make_ready()
    rig.clock.advance(1.0)
    in_flight = rig.health.calls[-1][1]
    rig.spawner.exit(None, sig=11)  # crash while a probe is in flight
    assert in_flight.called and rig.proc.state == "failed"
    assert rig.proc.last_error == "model 'm' was killed by SIGSEGV unexpectedly"
    assert not rig.clock.getDelayedCalls()


def test_zero_disables_the_probe(tmp_path: Path) -> None:
    for kw in ({"liveness_interval": 0}, {"liveness_interval": 1.0, "liveness_misses": 0}):
        rig = Rig(tmp_path, **kw)
        rig.make_ready()
        rig.clock.pump([1.0] * 30)
        assert len(rig.health.calls) == 1 and rig.proc.state == "ready"
        assert not rig.clock.getDelayedCalls()


# -- settings ---------------------------------------------------------------------------


def test_settings_defaults_and_values() -> None:
    d = LlamaSettings()
    assert (d.liveness_interval, d.liveness_timeout, d.liveness_misses) == (3.0, 2.0, 3)
    # the default detection bound: interval + (misses - 1) * max(interval, timeout) + timeout
    i, t, m = d.liveness_interval, d.liveness_timeout, d.liveness_misses
    assert i + (m - 1) * max(i, t) + t == 11 <= 15
    text = "llama_server:\n  liveness_interval: 0.25\n  liveness_timeout: 0.5\n  liveness_misses: 2"
    llama = parse_config(text, file="c.yaml").llama
    assert (llama.liveness_interval, llama.liveness_timeout, llama.liveness_misses) == (
        0.25, 0.5, 2)  # fmt: skip
    off = parse_config("llama_server:\n  liveness_interval: 0\n", file="c.yaml").llama
    assert off.liveness_interval == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("liveness_interval: -1", "llama_server.liveness_interval: must be 0 or more seconds"),
        ("liveness_timeout: 0", "llama_server.liveness_timeout: must be a number of seconds"),
        ("liveness_misses: 1.5", "llama_server.liveness_misses: expected a whole number"),
        ("liveness_misses: -1", "llama_server.liveness_misses: must be a whole number >= 0"),
        ("liveness_timout: 2", "did you mean 'liveness_timeout'"),
    ],
)
def test_bad_settings_name_file_and_line(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"llama_server:\n  ttl: 5\n  {line}\n", file="c.yaml")
    assert str(info.value).startswith("c.yaml:3: ")
    assert message in str(info.value)
