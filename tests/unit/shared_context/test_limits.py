"""The limits that turn a request away: 429 per alias, 503 for a full queue or a long wait."""

from __future__ import annotations

from server_core.shared_context import (
    ContextLimits,
    Lease,
    QueueFull,
    QueueTimeout,
    TooManyRequests,
)
from server_core.shared_context.limits import queue_full, queue_timeout, too_many_requests
from tests.unit.shared_context.helpers import START_TIME, alias, make, results


def test_per_alias_concurrency_limit_is_429_with_retry_after() -> None:
    ctx, clock, _ = make(max_concurrent_per_alias=2)
    ds = [ctx.acquire(alias("a")) for _ in range(3)]
    (third,) = results(ds[2:])
    assert third.value.status == 429 and "Retry-After" in third.value.headers
    clock.advance(START_TIME)
    assert all(isinstance(x, Lease) for x in results(ds[:2]))


def test_queue_full_is_503_with_retry_after() -> None:
    ctx, clock, _ = make(max_queue=2)
    ds = [ctx.acquire(alias("a")) for _ in range(3)]
    (third,) = results(ds[2:])
    assert third.value.status == 503 and third.value.code == "queue_full"
    assert third.value.headers["Retry-After"]
    clock.advance(START_TIME)


def test_queue_wait_timeout_is_503() -> None:
    ctx, clock, _ = make(queue_timeout=5)
    d = ctx.acquire(alias("a"))
    clock.advance(START_TIME)
    lease = results([d])[0]
    d_b = ctx.acquire(alias("b"))  # must wait for 'a', which is held
    clock.advance(5)
    (err,) = results([d_b])
    assert err.value.status == 503 and err.value.code == "queue_timeout"
    lease.release()


def test_each_refusal_says_what_to_do_and_when_to_come_back() -> None:
    limits = ContextLimits(max_queue=3, queue_timeout=7.5, max_concurrent_per_alias=2,
                           retry_after=9)  # fmt: skip
    busy = too_many_requests(limits, "a")
    assert isinstance(busy, TooManyRequests) and busy.status == 429
    assert busy.type == "rate_limit_error" and busy.code == "too_many_requests"
    assert "'a'" in busy.message and "2 requests" in busy.message
    full = queue_full(limits)
    assert isinstance(full, QueueFull) and (full.status, full.code) == (503, "queue_full")
    assert "(3)" in full.message
    late = queue_timeout(limits, "b")
    assert isinstance(late, QueueTimeout) and (late.status, late.code) == (503, "queue_timeout")
    assert "7.5 s" in late.message and "'b'" in late.message
    assert all(e.headers == {"Retry-After": "9"} for e in (busy, full, late))
