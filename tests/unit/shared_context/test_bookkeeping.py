"""The lease and queue bookkeeping under endings out of the usual order.

Issue 18's survivors: a granted waiter that stays in the queue (an idle context then
answers cold requests with ``queue_full``), a lease released twice (a swap then stops a
model another stream still uses), a cancelled waiter taking the others with it (they wait
for the queue timeout), and eviction that is not by last use.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.python.failure import Failure

from server_core.errors import ServerCoreError
from server_core.interfaces import ILease
from tests.unit.shared_context.helpers import (
    START_TIME,
    STOP_TIME,
    StubProcess,
    alias,
    make,
    result_of,
)


def tick(clock: Any, seconds: float) -> None:
    """Advance in small steps, so a stop and the start it makes room for both run."""
    for _ in range(int(seconds / 0.25)):
        clock.advance(0.25)


def test_a_granted_waiter_leaves_the_queue_so_an_idle_context_takes_cold_requests() -> None:
    # max_queue 1: one stale waiter left behind would make the next cold request a 503.
    ctx, clock, _ = make(max_queue=1, ttl=1.0, max_wait=0)
    for round_ in range(4):
        d = ctx.acquire(alias("a"))
        clock.advance(START_TIME)
        lease = result_of(d)
        assert ILease.providedBy(lease), f"round {round_}: {lease}"
        lease.release()
        tick(clock, 1.0 + STOP_TIME)  # idle TTL: the server stops, the next one is cold
        assert not ctx.is_loaded("a")
    assert ctx.running() == [] and len(StubProcess.spawned) == 4


def test_a_warm_request_after_a_granted_waiter_takes_the_fast_path() -> None:
    ctx, clock, _ = make(max_queue=1)
    first = ctx.acquire(alias("a"))
    clock.advance(START_TIME)
    second = ctx.acquire(alias("a"))
    assert second.called, "a ready server and an empty queue grant at once"
    result_of(first).release()
    result_of(second).release()


def test_a_lease_released_twice_releases_once_so_a_swap_spares_the_other_stream() -> None:
    ctx, clock, _ = make(max_loaded=1, max_wait=0)
    first, second = ctx.acquire(alias("a")), ctx.acquire(alias("a"))
    clock.advance(START_TIME)
    lease_one, lease_two = result_of(first), result_of(second)
    lease_one.release()
    lease_one.release()  # a second release (error path and finally, say) is a no-op
    other = ctx.acquire(alias("b"))
    clock.advance(60)
    a_process = StubProcess.spawned[0]
    assert a_process.state == "ready", "a swap stopped a model whose other stream still runs"
    assert not other.called and len(StubProcess.spawned) == 1
    lease_two.release()
    tick(clock, STOP_TIME + START_TIME)
    assert a_process.state == "stopped" and ILease.providedBy(result_of(other))


def _cold_waiters(count: int, **limits: Any) -> tuple[Any, Any, list[defer.Deferred[Any]]]:
    ctx, clock, _ = make(**limits)
    waiters = [ctx.acquire(alias("a")) for _ in range(count)]
    for d in waiters:
        result_of(d)  # capture every outcome, a cancellation included
    return ctx, clock, waiters


def test_a_cancelled_waiter_removes_only_itself() -> None:
    _, clock, waiters = _cold_waiters(3, queue_timeout=60)
    waiters[1].cancel()
    clock.advance(START_TIME)
    outcomes = [result_of(d) for d in waiters]
    assert ILease.providedBy(outcomes[0]) and ILease.providedBy(outcomes[2])
    assert isinstance(outcomes[1], Failure) and outcomes[1].check(defer.CancelledError)


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(min_value=2, max_value=6),
    data=st.data(),
)
def test_waiters_cancelling_in_any_order_leave_the_rest_granted(count: int, data: Any) -> None:
    ctx, clock, waiters = _cold_waiters(count, queue_timeout=60)
    order = data.draw(st.permutations(range(count)))
    cancelled = set(order[: data.draw(st.integers(min_value=0, max_value=count))])
    for i in order:
        if i in cancelled:
            waiters[i].cancel()
            clock.advance(data.draw(st.sampled_from([0.0, 0.25])))  # all before the start
    clock.advance(START_TIME)
    for i, d in enumerate(waiters):
        outcome = result_of(d)
        if i in cancelled:
            assert isinstance(outcome, Failure) and outcome.check(defer.CancelledError), i
        else:
            # Granted at the start, not failed at the queue timeout.
            assert ILease.providedBy(outcome), (i, outcome)
    assert all(row["waiting"] == 0 for row in ctx.running())
    for d in waiters:
        if ILease.providedBy(result_of(d)):
            result_of(d).release()


def test_eviction_stops_the_least_recently_used_not_the_first_started() -> None:
    ctx, clock, _ = make(max_loaded=2, max_wait=0)
    a, b = ctx.acquire(alias("a")), ctx.acquire(alias("b"))
    clock.advance(START_TIME)
    result_of(a).release()
    clock.advance(1)
    result_of(b).release()
    clock.advance(1)
    again = ctx.acquire(alias("a"))  # 'a' started first, but is now the most recently used
    assert again.called
    result_of(again).release()
    clock.advance(1)
    c = ctx.acquire(alias("c"))
    tick(clock, STOP_TIME + START_TIME)
    a_process, b_process = StubProcess.spawned[:2]
    assert (a_process.state, b_process.state) == ("ready", "stopped")
    assert ILease.providedBy(result_of(c))


def test_a_queue_timeout_is_a_503_for_that_waiter_only() -> None:
    ctx, clock, _ = make(max_loaded=1, max_wait=0, queue_timeout=5)
    holder = ctx.acquire(alias("a"))
    clock.advance(START_TIME)
    blocked = ctx.acquire(alias("b"))
    result_of(blocked)
    clock.advance(5)
    outcome = result_of(blocked)
    assert isinstance(outcome, Failure) and isinstance(outcome.value, ServerCoreError)
    assert outcome.value.code == "queue_timeout"
    assert ILease.providedBy(result_of(holder))
    result_of(holder).release()


def test_last_use_is_when_the_last_stream_ended_not_when_it_began() -> None:
    # Both granted at once; 'a' streams longer, so 'b' is the least recently used.
    ctx, clock, _ = make(max_loaded=2, max_wait=0)
    a, b = ctx.acquire(alias("a")), ctx.acquire(alias("b"))
    clock.advance(START_TIME)
    clock.advance(1)
    result_of(b).release()
    clock.advance(2)
    result_of(a).release()
    c = ctx.acquire(alias("c"))
    tick(clock, STOP_TIME + START_TIME)
    a_process, b_process = StubProcess.spawned[:2]
    assert (a_process.state, b_process.state) == ("ready", "stopped")
    assert ILease.providedBy(result_of(c))
