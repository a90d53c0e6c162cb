"""A slot's lifecycle: the legal moves, the refused ones, and data that lives in one phase."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from server_core.shared_context._slot import (
    Draining,
    Failed,
    IllegalTransition,
    Lost,
    Probing,
    Ready,
    Slot,
    Starting,
    Stopped,
    Stopping,
)
from server_core.template_check import CHECKED_OK
from tests.unit.shared_context.helpers import StubProcess, alias


def new_slot(clock: Clock | None = None) -> Slot:
    process = StubProcess(alias("a"), lambda *_: None, clock or Clock())
    return Slot(alias("a"), process, last_used=0.0)


def test_the_whole_life_of_a_checked_server() -> None:
    slot = new_slot()
    gone = slot.when_gone()
    assert isinstance(slot.phase, Starting) and slot.starting and not slot.up
    slot.started(probe=True)
    assert isinstance(slot.phase, Probing) and slot.up and not slot.grantable
    assert slot.probed(CHECKED_OK) and slot.template == CHECKED_OK
    assert isinstance(slot.phase, Ready) and slot.grantable and slot.evictable
    slot.granted(5.0)
    assert (slot.leases, slot.requests, slot.last_used) == (1, 1, 5.0)
    assert not slot.evictable
    slot.drain()
    assert isinstance(slot.phase, Draining) and slot.draining and not slot.grantable
    slot.released(7.0)
    slot.stop("requested")
    assert slot.phase == Stopping("requested") and slot.stopping and not gone.called
    slot.stopped()
    assert slot.phase == Stopped("requested") and slot.gone and gone.called
    assert slot.when_gone().called  # once gone, at once


def test_without_a_probe_a_started_server_is_ready() -> None:
    slot = new_slot()
    slot.started(probe=False)
    assert slot.grantable


@pytest.mark.parametrize("phase", ["starting", "probing", "draining", "stopping", "stopped"])
def test_only_a_ready_slot_grants(phase: str) -> None:
    slot = new_slot()
    moves = {
        "probing": [lambda: slot.started(probe=True)],
        "draining": [lambda: slot.started(probe=False), lambda: slot.drain()],
        "stopping": [lambda: slot.stop("x")],
        "stopped": [lambda: slot.stop("x"), slot.stopped],
    }
    for move in moves.get(phase, []):
        move()
    with pytest.raises(IllegalTransition, match=f"while {phase}"):
        slot.granted(1.0)
    assert slot.leases == 0


def test_moves_the_lifecycle_does_not_have_raise() -> None:
    slot = new_slot()
    with pytest.raises(IllegalTransition, match="starting -> draining"):
        slot.drain()
    slot.started(probe=False)
    with pytest.raises(IllegalTransition, match="ready -> failed"):
        slot.failed("no")
    slot.lost("died")
    assert slot.phase == Lost("died")
    with pytest.raises(IllegalTransition, match="lost -> lost"):
        slot.lost("again")
    assert isinstance(slot.phase, Lost)


def test_a_start_fails_only_while_starting() -> None:
    slot = new_slot()
    slot.failed("exit 1")
    assert slot.phase == Failed("exit 1") and slot.gone


def test_a_verdict_after_the_server_went_away_grants_nothing() -> None:
    slot = new_slot()
    slot.started(probe=True)
    slot.lost("died")
    assert slot.probed(CHECKED_OK) is False
    assert slot.template == CHECKED_OK and isinstance(slot.phase, Lost)
    slot.stopped()  # a late stop completion changes nothing either
    assert isinstance(slot.phase, Lost)


def test_the_idle_timer_lives_only_in_ready() -> None:
    clock = Clock()
    slot = new_slot(clock)
    expired: list[str] = []
    slot.started(probe=True)
    slot.arm_idle(clock, 10, lambda: expired.append("x"))
    assert clock.getDelayedCalls() == []  # probing: no timer
    slot.probed(CHECKED_OK)
    slot.arm_idle(clock, 10, lambda: expired.append("x"))
    assert len(clock.getDelayedCalls()) == 1
    slot.granted(1.0)  # a lease stops the clock
    assert clock.getDelayedCalls() == []
    slot.released(2.0)
    slot.arm_idle(clock, 10, lambda: expired.append("x"))
    clock.advance(10)
    assert expired == ["x"]
    slot.arm_idle(clock, 10, lambda: expired.append("y"))
    slot.stop("swap")  # leaving ready cancels it
    clock.advance(100)
    assert expired == ["x"] and clock.getDelayedCalls() == []
