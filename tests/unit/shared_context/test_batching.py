"""Batching by model with a fairness bound: the loaded model serves its waiting requests
before a swap until a request for another model has waited ``max_wait``; ``min_resident``,
``priority``, the eviction preference and what ``/running`` shows (Clock, stub processes)."""

from __future__ import annotations

from twisted.internet.task import Clock

from server_core.shared_context import ContextLimits, Lease
from server_core.shared_context._policy import eviction_candidate
from server_core.shared_context._slot import Slot
from server_core.shared_context._waiters import WaitQueue
from tests.unit.shared_context.helpers import (
    START_TIME,
    STOP_TIME,
    StubProcess,
    alias,
    make,
    result_of,
    results,
)


def _loaded_a(**limits: float) -> tuple[object, Clock, Lease]:
    ctx, clock, _ = make(max_loaded=1, **limits)
    d = ctx.acquire(alias("a"))
    clock.advance(START_TIME)
    lease = result_of(d)
    assert isinstance(lease, Lease)
    return ctx, clock, lease


def test_requests_for_the_loaded_model_are_served_before_a_waiting_swap() -> None:
    ctx, _, _ = _loaded_a(max_wait=30)
    d_b = ctx.acquire(alias("b"))  # a swap to 'b' waits for 'a''s stream
    d_a2 = ctx.acquire(alias("a"))  # arrived later, but 'a' is loaded: served now
    assert isinstance(result_of(d_a2), Lease) and not d_b.called
    assert ctx.starts == 1  # type: ignore[attr-defined]


def test_the_swap_happens_as_soon_as_no_request_for_the_loaded_model_waits() -> None:
    ctx, clock, lease_a = _loaded_a(max_wait=30)
    d_b = ctx.acquire(alias("b"))
    clock.advance(1)
    lease_a.release()
    clock.pump([STOP_TIME, START_TIME])  # long before max_wait
    assert result_of(d_b).alias == "b"
    assert ctx.swaps == 1  # type: ignore[attr-defined]


def test_after_max_wait_later_requests_for_the_loaded_model_queue_behind_the_swap() -> None:
    ctx, clock, lease_a = _loaded_a(max_wait=30)
    d_b = ctx.acquire(alias("b"))
    clock.advance(29)
    d_a2 = ctx.acquire(alias("a"))
    assert isinstance(result_of(d_a2), Lease)  # 'b' not due yet
    clock.advance(1)  # 'b' has waited max_wait: it is due
    d_a3 = ctx.acquire(alias("a"))
    assert not d_a3.called
    lease_a.release()
    result_of(d_a2).release()  # the streams end; nothing was cut
    clock.pump([STOP_TIME, START_TIME])
    lease_b = result_of(d_b)
    assert lease_b.alias == "b" and not d_a3.called
    lease_b.release()
    clock.pump([STOP_TIME, START_TIME])
    assert result_of(d_a3).alias == "a"


def test_a_due_swap_never_cuts_a_stream() -> None:
    ctx, clock, lease_a = _loaded_a(max_wait=5)
    d_b = ctx.acquire(alias("b"))
    clock.advance(200)
    assert StubProcess.spawned[0].state == "ready" and not d_b.called
    lease_a.release()
    clock.pump([STOP_TIME, START_TIME])
    assert result_of(d_b).alias == "b"


def test_min_resident_keeps_a_just_loaded_model_serving_past_max_wait() -> None:
    ctx, clock, _ = _loaded_a(max_wait=5, min_resident=60)
    d_b = ctx.acquire(alias("b"))
    clock.advance(30)  # 'b' is past max_wait, 'a' was loaded 30 s ago
    assert isinstance(result_of(ctx.acquire(alias("a"))), Lease)
    clock.advance(31)  # 'a' has been resident min_resident: 'b' is due now
    assert not ctx.acquire(alias("a")).called
    assert not d_b.called


def test_a_higher_priority_alias_is_swapped_in_first_and_without_waiting_max_wait() -> None:
    ctx, clock, lease_a = _loaded_a(max_wait=30)
    clock.advance(1)
    d_c = ctx.acquire(alias("c"))
    d_b = ctx.acquire(alias("b", priority=1))  # arrived after 'c', but ranks higher
    assert not ctx.acquire(alias("a")).called  # 'b' outranks 'a': no more batching
    lease_a.release()
    clock.pump([STOP_TIME, START_TIME])
    assert result_of(d_b).alias == "b" and not d_c.called


def test_a_model_swapped_in_serves_its_whole_batch_before_the_next_due_swap() -> None:
    ctx, clock, lease_a = _loaded_a(max_wait=5)
    clock.advance(1)
    d_b1 = ctx.acquire(alias("b"))
    clock.advance(1)
    d_c = ctx.acquire(alias("c"))
    clock.advance(1)
    d_b2 = ctx.acquire(alias("b"))  # after 'c', but waiting for the same start as b1
    clock.advance(10)  # all three are due now
    lease_a.release()
    clock.pump([STOP_TIME, START_TIME])
    b1, b2 = results([d_b1, d_b2])
    assert b1.alias == b2.alias == "b" and not d_c.called
    assert ctx.starts == 2  # type: ignore[attr-defined]
    clock.advance(0.1)
    assert not ctx.acquire(alias("b")).called  # not in the batch: behind the swap to 'c'


def _slot(name: str, last_used: float) -> Slot:
    clock = Clock()
    slot = Slot(alias(name), StubProcess(alias(name), lambda *_: None, clock), last_used)
    slot.started(probe=False)
    return slot


def test_eviction_prefers_an_idle_model_nobody_waits_for_then_the_least_recently_used() -> None:
    queue = WaitQueue(Clock())
    old, newer, newest = _slot("old", 1), _slot("newer", 2), _slot("newest", 3)
    queue.add(alias("old"), timeout=0, timed_out=lambda w: None, cancelled=lambda: None)
    slots = [old, newer, newest]
    assert eviction_candidate(slots, queue, unwanted_only=False) is newer
    assert eviction_candidate([old], queue, unwanted_only=False) is old
    assert eviction_candidate([old], queue, unwanted_only=True) is None


def test_running_shows_queue_depth_per_model_swaps_and_waits() -> None:
    ctx, clock, lease_a = _loaded_a(max_wait=30)
    ctx.acquire(alias("b"))
    ctx.acquire(alias("b"))
    rows = {row["alias"]: row for row in ctx.running()}  # type: ignore[attr-defined]
    assert rows["b"]["state"] == "queued" and rows["b"]["waiting"] == 2
    assert rows["a"]["waiting"] == 0 and rows["a"]["wait_max"] == START_TIME
    clock.advance(3)
    lease_a.release()
    clock.pump([STOP_TIME, START_TIME])
    (row,) = ctx.running()  # type: ignore[attr-defined]
    assert row["alias"] == "b" and row["swaps"] == 1 and row["starts"] == 1
    assert row["wait_last"] == row["wait_max"] == 3 + STOP_TIME + START_TIME


def test_limits_default_to_batching_with_a_30_second_bound() -> None:
    assert ContextLimits().max_wait == 30.0 and ContextLimits().min_resident == 0.0
    assert results([]) == []
