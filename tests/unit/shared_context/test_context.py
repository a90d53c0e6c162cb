"""DefaultSharedContext's scheduling: one start per alias, swaps that wait for leases,
arrival order, crashes, TTL, unload, shutdown and listeners (Clock and stub processes)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from server_core.aliases import LocalAlias
from server_core.errors import ContextError, ServerCoreError
from server_core.interfaces import ILease, IServerProcess, ISharedContext, IStateListener
from server_core.shared_context import ContextLimits, DefaultSharedContext, Lease
from tests.unit.shared_context.helpers import (
    START_TIME,
    STOP_TIME,
    StubProcess,
    alias,
    make,
    make_strict,
    result_of,
    results,
)


def test_interfaces() -> None:
    ctx, clock, recorder = make()
    assert verifyObject(ISharedContext, ctx)
    assert verifyObject(IStateListener, recorder)
    d = ctx.acquire(alias("a"))
    clock.advance(START_TIME)
    (lease,) = results([d])
    assert verifyObject(ILease, lease)
    assert verifyObject(IServerProcess, StubProcess.spawned[0])


def test_concurrent_requests_for_a_cold_model_start_it_once() -> None:
    ctx, clock, _ = make(max_queue=128)
    ds = [ctx.acquire(alias("a")) for _ in range(100)]
    assert len(StubProcess.spawned) == 1
    assert all(r is None for r in results(ds))
    clock.advance(START_TIME)
    leases = results(ds)
    assert all(isinstance(lease, Lease) for lease in leases)
    assert {lease.base_url for lease in leases} == {StubProcess.spawned[0].base_url}
    assert ctx.starts == 1


def test_swap_waits_for_the_stream_in_flight() -> None:
    ctx, clock, rec = make(max_loaded=1)
    d = ctx.acquire(alias("a"))
    clock.advance(START_TIME)
    (lease_a,) = results([d])
    d_b = ctx.acquire(alias("b"))
    clock.advance(60)
    # 'a' still has a lease: it is neither stopped nor is 'b' started.
    assert StubProcess.spawned[0].state == "ready"
    assert len(StubProcess.spawned) == 1 and not d_b.called
    lease_a.release()
    clock.advance(STOP_TIME)
    assert StubProcess.spawned[0].state == "stopped"
    clock.advance(START_TIME)
    (lease_b,) = results([d_b])
    assert lease_b.alias == "b"
    assert [e for e in rec.events if e[0] in ("start", "ready", "stop")] == [
        ("start", "a"), ("ready", "a"), ("stop", "a"), ("start", "b"), ("ready", "b")
    ]  # fmt: skip


def test_with_max_wait_0_new_arrivals_queue_behind_a_waiting_swap() -> None:
    # max_wait 0: every waiting swap is due at once, which is plain arrival order.
    ctx, clock, _ = make(max_loaded=1, max_wait=0)
    d = ctx.acquire(alias("a"))
    clock.advance(START_TIME)
    (lease_a,) = results([d])
    d_b = ctx.acquire(alias("b"))
    d_a2 = ctx.acquire(alias("a"))  # arrives after the swap request
    assert not d_a2.called
    lease_a.release()
    clock.pump([STOP_TIME, START_TIME])
    (lease_b,) = results([d_b])
    assert lease_b.alias == "b" and not d_a2.called
    lease_b.release()
    clock.pump([STOP_TIME, START_TIME])
    (lease_a2,) = results([d_a2])
    assert lease_a2.alias == "a"


def test_requests_waiting_for_the_running_model_are_served_first() -> None:
    ctx, clock, _ = make(max_loaded=1)
    d_a1 = ctx.acquire(alias("a"))
    d_a2 = ctx.acquire(alias("a"))
    d_b = ctx.acquire(alias("b"))
    clock.advance(START_TIME)
    a1, a2 = results([d_a1, d_a2])
    assert a1.alias == a2.alias == "a" and not d_b.called
    a1.release()
    a2.release()
    clock.pump([STOP_TIME, START_TIME])
    assert results([d_b])[0].alias == "b"


def test_max_loaded_two_evicts_least_recently_used() -> None:
    ctx, clock, _ = make(max_loaded=2)
    for name in ("a", "b"):
        d = ctx.acquire(alias(name))
        clock.advance(START_TIME)
        results([d])[0].release()
        clock.advance(1)
    # 'a' was used first: it is the one evicted for 'c'.
    d = ctx.acquire(alias("a"))
    results([d])[0].release()
    clock.advance(1)
    d_c = ctx.acquire(alias("c"))
    clock.pump([STOP_TIME, START_TIME])
    assert results([d_c])[0].alias == "c"
    assert ctx.is_loaded("a") and ctx.is_loaded("c") and not ctx.is_loaded("b")


def test_crash_during_start_fails_waiters_and_next_request_restarts() -> None:
    ctx, clock, rec = make(failing=frozenset({"bad"}))
    ds = [ctx.acquire(alias("bad")) for _ in range(3)]
    clock.advance(START_TIME)
    errors = results(ds)
    assert all(isinstance(e.value, ContextError) for e in errors)
    assert "bad" in errors[0].value.message
    assert ("failed", "bad") in rec.events
    assert ctx.running() == []
    ctx.acquire(alias("bad")).addErrback(lambda f: None)
    assert len(StubProcess.spawned) == 2


def test_crash_while_ready_is_noticed_and_next_request_restarts() -> None:
    ctx, clock, rec = make()
    d = ctx.acquire(alias("a"))
    clock.advance(START_TIME)
    (lease,) = results([d])
    lost = lease.when_lost()
    StubProcess.spawned[0].crash()
    assert lost.called and ("failed", "a") in rec.events
    assert not ctx.is_loaded("a")
    lease.release()  # releasing a lease of a dead server is harmless
    d2 = ctx.acquire(alias("a"))
    clock.advance(START_TIME)
    assert results([d2])[0].base_url == StubProcess.spawned[1].base_url


@pytest.mark.parametrize(("ttl", "stops_after"), [(0, 0.0), (30, 30.0), (-1, None)])
def test_idle_ttl(ttl: float, stops_after: float | None) -> None:
    ctx, clock, _ = make(ttl=300)
    d = ctx.acquire(alias("a", ttl=ttl))
    clock.advance(START_TIME)
    lease = results([d])[0]
    clock.advance(1000)  # a lease blocks the TTL however long it is held
    assert ctx.is_loaded("a")
    lease.release()
    if stops_after is None:
        clock.advance(10_000)
        assert ctx.is_loaded("a")
        return
    clock.advance(max(0.0, stops_after - 0.01))
    if stops_after > 0:
        assert ctx.is_loaded("a")
    clock.pump([0.01, STOP_TIME])
    assert not ctx.is_loaded("a") and ctx.running() == []


def test_global_ttl_counts_from_last_release() -> None:
    ctx, clock, _ = make(ttl=10)
    d = ctx.acquire(alias("a"))
    clock.advance(START_TIME)
    results([d])[0].release()
    clock.advance(8)
    d = ctx.acquire(alias("a"))
    results([d])[0].release()
    clock.advance(8)
    assert ctx.is_loaded("a")
    clock.pump([2, STOP_TIME])
    assert not ctx.is_loaded("a")


def test_unload_waits_for_leases_then_stops() -> None:
    ctx, clock, rec = make()
    d = ctx.acquire(alias("a"))
    clock.advance(START_TIME)
    lease = results([d])[0]
    stopped = ctx.stop("a")
    clock.advance(100)
    assert not stopped.called and StubProcess.spawned[0].state == "ready"
    lease.release()
    clock.advance(STOP_TIME)
    assert stopped.called and ("stop", "a") in rec.events


def test_close_stops_everything_at_once_and_refuses_new_requests() -> None:
    ctx, clock, _ = make(max_loaded=2)
    ds = [ctx.acquire(alias(n)) for n in ("a", "b")]
    clock.advance(START_TIME)
    assert all(isinstance(x, Lease) for x in results(ds))
    closed = ctx.close()
    clock.advance(STOP_TIME)
    assert closed.called
    assert all(p.state == "stopped" for p in StubProcess.spawned)
    assert isinstance(results([ctx.acquire(alias("a"))])[0].value, ContextError)


def test_failing_listener_is_contained() -> None:
    ctx, clock, rec = make()

    @implementer(IStateListener)
    class Broken:
        def on_state_change(self, event: str, alias: str, detail: dict[str, Any]) -> None:
            raise RuntimeError("listener bug")

    ctx.add_state_listener(Broken())
    ctx.add_state_listener(rec)
    d = ctx.acquire(alias("a"))
    clock.advance(START_TIME)
    assert isinstance(results([d])[0], Lease)
    assert ("ready", "a") in rec.events


def test_running_reports_state() -> None:
    ctx, clock, _ = make()
    d = ctx.acquire(alias("a"))
    (entry,) = ctx.running()
    assert entry["state"] == "starting" and entry["waiting"] == 1
    clock.pump([START_TIME, 3])
    lease = results([d])[0]
    (entry,) = ctx.running()
    assert entry["state"] == "ready" and entry["in_flight"] == 1
    assert entry["port"] == StubProcess.spawned[0].port and entry["uptime"] == pytest.approx(3)
    lease.release()


def test_factory_that_cannot_spawn_fails_the_waiters_with_its_message() -> None:
    clock = Clock()

    def factory(a: LocalAlias, on_state: Any) -> StubProcess:
        raise ContextError(f"The model '{a.name}' needs llama-server, which is not installed")

    ctx = DefaultSharedContext(factory, clock=clock, limits=ContextLimits())
    ds = [ctx.acquire(alias("a")) for _ in range(2)]
    errors = results(ds)
    assert all("not installed" in e.value.message for e in errors)
    assert ctx.running() == []


def test_unload_while_loading_does_not_fail_requests_that_come_after() -> None:
    ctx, clock = make_strict()
    first = ctx.acquire(alias("a"))
    first.addErrback(lambda f: None)
    clock.advance(0.5)
    ctx.stop("a")  # unload while it loads
    late = ctx.acquire(alias("a"))
    clock.pump([STOP_TIME, START_TIME, START_TIME])
    assert isinstance(result_of(late), Lease), result_of(late)
    assert len(StubProcess.spawned) == 2  # a fresh start for whoever still wants it


def test_a_model_being_unloaded_does_not_block_other_models_with_room() -> None:
    ctx, clock, _ = make(max_loaded=2, queue_timeout=30)
    d = ctx.acquire(alias("a"))
    clock.advance(START_TIME)
    lease_a = results([d])[0]
    ctx.stop("a")  # drains: 'a' keeps serving its lease
    wants_a = ctx.acquire(alias("a"))
    wants_b = ctx.acquire(alias("b"))
    clock.advance(START_TIME)
    assert isinstance(result_of(wants_b), Lease) and not wants_a.called
    lease_a.release()
    clock.pump([STOP_TIME, START_TIME])
    assert isinstance(result_of(wants_a), Lease)


def test_a_factory_that_raises_anything_fails_only_its_alias() -> None:
    StubProcess.spawned = []
    clock = Clock()

    def factory(a: LocalAlias, on_state: Any) -> StubProcess:
        if a.name == "bad":
            raise ValueError("--ctx-size needs a value")
        return StubProcess(a, on_state, clock)

    ctx = DefaultSharedContext(factory, clock=clock, limits=ContextLimits(max_loaded=2))
    bad = ctx.acquire(alias("bad"))
    good = ctx.acquire(alias("good"))
    clock.advance(START_TIME)
    error = result_of(bad).value
    assert isinstance(error, ServerCoreError) and error.status == 500
    assert "error id" in error.message and "ctx-size" not in error.message
    lease = result_of(good)
    assert isinstance(lease, Lease)
    lease.release()  # the scheduler still works
    assert isinstance(result_of(ctx.acquire(alias("good"))), Lease)
