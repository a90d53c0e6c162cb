"""The arrival-order queue: each waiter answered once, its timer never outliving it."""

from __future__ import annotations

from twisted.internet.task import Clock

from server_core.shared_context._waiters import Waiter, WaitQueue
from tests.unit.shared_context.helpers import START_TIME, StubProcess, alias, make, results


def test_cancelled_waiter_leaves_the_queue() -> None:
    ctx, clock, _ = make()
    d = ctx.acquire(alias("a"))
    clock.advance(START_TIME)
    lease = results([d])[0]
    d_b = ctx.acquire(alias("b"))
    d_b.addErrback(lambda f: None)
    d_b.cancel()
    lease.release()
    clock.advance(100)
    assert len(StubProcess.spawned) == 1  # nobody wanted 'b' any more


def queue_with(timeout: float = 0) -> tuple[WaitQueue, Clock, list[Waiter], list[str]]:
    clock = Clock()
    queue = WaitQueue(clock)
    timed_out: list[Waiter] = []
    cancelled: list[str] = []
    for name in ("a", "b", "a"):
        queue.add(
            alias(name),
            timeout=timeout,
            timed_out=timed_out.append,
            cancelled=lambda: cancelled.append("x"),
        )
    return queue, clock, timed_out, cancelled


def test_the_queue_keeps_arrival_order_and_counts_per_alias() -> None:
    queue, _, _, _ = queue_with()
    assert [w.alias.name for w in queue] == ["a", "b", "a"]
    assert len(queue) == 3 and queue.count("a") == 2 and queue.count("c") == 0


def test_a_failed_waiter_is_answered_once_and_its_timer_stops() -> None:
    queue, clock, timed_out, _ = queue_with(timeout=5)
    first = next(iter(queue))
    first.deferred.addErrback(lambda f: None)
    queue.fail(first, RuntimeError("no"))
    queue.fail(first, RuntimeError("again"))  # already answered: ignored
    clock.advance(5)
    assert [w.alias.name for w in timed_out] == ["b", "a"]
    assert first.timer is None and len(queue) == 2


def test_failing_an_alias_leaves_the_others_waiting() -> None:
    queue, _, _, _ = queue_with()
    errors: list[str] = []
    for waiter in queue:
        waiter.deferred.addErrback(lambda f: errors.append(str(f.value)))
    queue.fail_alias("a", RuntimeError("a is broken"))
    assert errors == ["a is broken"] * 2
    assert [w.alias.name for w in queue] == ["b"]
    queue.fail_all(RuntimeError("shutting down"))
    assert len(queue) == 0 and errors[-1] == "shutting down"


def test_cancelling_a_waiter_removes_it_then_says_so() -> None:
    queue, _, _, cancelled = queue_with()
    middle = list(queue)[1]
    middle.deferred.addErrback(lambda f: None)
    middle.deferred.cancel()
    assert [w.alias.name for w in queue] == ["a", "a"] and cancelled == ["x"]
