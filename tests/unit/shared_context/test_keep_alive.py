"""A per-request keep_alive sets the idle TTL of a running server; leases still win."""

from __future__ import annotations

from typing import Any

from server_core.shared_context import DefaultSharedContext
from tests.unit.shared_context.helpers import START_TIME, STOP_TIME, alias, make, results


def loaded(ctx: DefaultSharedContext, clock: Any, name: str = "a") -> Any:
    d = ctx.acquire(alias(name))
    clock.advance(START_TIME)
    return results([d])[0]


def test_keep_alive_zero_unloads_once_the_request_ends_never_during_it() -> None:
    ctx, clock, _ = make(ttl=300)
    lease = loaded(ctx, clock)
    assert ctx.keep_alive("a", 0) == 0
    clock.advance(1000)  # the lease holds the server however long it runs
    assert ctx.is_loaded("a")
    lease.release()
    clock.pump([0, STOP_TIME])
    assert not ctx.is_loaded("a") and ctx.running() == []


def test_keep_alive_counts_from_the_last_release() -> None:
    ctx, clock, _ = make(ttl=300)
    lease = loaded(ctx, clock)
    ctx.keep_alive("a", 20)
    clock.advance(50)
    lease.release()
    clock.advance(19.9)
    assert ctx.is_loaded("a")
    clock.pump([0.1, STOP_TIME])
    assert not ctx.is_loaded("a")


def test_negative_keeps_the_server_loaded_past_the_configured_ttl() -> None:
    ctx, clock, _ = make(ttl=10)
    loaded(ctx, clock).release()
    assert ctx.keep_alive("a", -1) == -1
    clock.advance(100_000)
    assert ctx.is_loaded("a")


def test_an_idle_server_gets_its_new_ttl_at_once() -> None:
    ctx, clock, _ = make(ttl=300)
    loaded(ctx, clock).release()
    clock.advance(100)
    ctx.keep_alive("a", 5)  # from now on, not from the release 100 s ago
    clock.advance(4.9)
    assert ctx.is_loaded("a")
    clock.pump([0.1, STOP_TIME])
    assert not ctx.is_loaded("a")


def test_it_lasts_as_long_as_that_server_the_next_start_has_the_configured_ttl() -> None:
    ctx, clock, _ = make(ttl=30)
    lease = loaded(ctx, clock)
    ctx.keep_alive("a", 0)
    lease.release()
    clock.pump([0, STOP_TIME])
    assert not ctx.is_loaded("a")
    loaded(ctx, clock).release()
    assert ctx.keep_alive("a") == 30
    clock.advance(29)
    assert ctx.is_loaded("a")


def test_asking_without_setting_and_for_an_alias_that_is_not_running() -> None:
    ctx, clock, _ = make(ttl=42)
    assert ctx.keep_alive("a") is None and ctx.keep_alive("a", 5) is None
    lease = loaded(ctx, clock)
    assert ctx.keep_alive("a") == 42  # asking changes nothing
    lease.release()
    clock.advance(41)
    assert ctx.is_loaded("a")
    assert ctx.keep_alive("b", 0) is None  # another alias is untouched
    clock.pump([1, STOP_TIME])
    assert not ctx.is_loaded("a")


def test_other_leases_on_the_same_server_still_win() -> None:
    ctx, clock, _ = make(ttl=300)
    first, second = loaded(ctx, clock), ctx.acquire(alias("a"))
    (second_lease,) = results([second])
    ctx.keep_alive("a", 0)
    first.release()
    clock.advance(100)
    assert ctx.is_loaded("a")  # the other request's response is never cut
    second_lease.release()
    clock.pump([0, STOP_TIME])
    assert not ctx.is_loaded("a")
