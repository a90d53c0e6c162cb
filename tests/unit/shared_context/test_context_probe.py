"""The shared context and the chat-template probe: no lease before the verdict, one probe
per start, the verdict carried by every lease and shown in ``running()``."""

from __future__ import annotations

from server_core.shared_context import Lease
from server_core.template_check import CHECKED_OK, TemplateVerdict
from tests.unit.shared_context.helpers import (
    PROBE_TIME,
    START_TIME,
    STOP_TIME,
    StubProcess,
    alias,
    context_with,
    result_of,
)

BROKEN = TemplateVerdict(False, "the chat template drops the messages (...): use --no-jinja")


def test_no_lease_before_the_verdict_then_one_probe_per_start() -> None:
    ctx, clock, probe = context_with(CHECKED_OK)
    first = ctx.acquire(alias("a"))
    clock.advance(START_TIME)
    assert StubProcess.spawned[0].state == "ready"
    assert result_of(first) is None  # ready, but its template is not judged yet
    assert probe.calls == [("a", StubProcess.spawned[0].base_url)]
    clock.advance(PROBE_TIME)
    lease = result_of(first)
    assert lease.chat_template_error is None
    lease.release()
    second = result_of(ctx.acquire(alias("a")))
    assert second.chat_template_error is None
    assert len(probe.calls) == 1
    (row,) = ctx.running()
    assert row["chat_template"] == "ok"


def test_a_dropping_template_is_reported_and_carried_by_every_lease() -> None:
    ctx, clock, _ = context_with(BROKEN)
    d = ctx.acquire(alias("a"))
    clock.advance(START_TIME)
    clock.advance(PROBE_TIME)
    lease = result_of(d)
    assert lease.chat_template_error == BROKEN.detail
    (row,) = ctx.running()
    assert row["chat_template"] == "drops_messages"
    assert row["chat_template_detail"] == BROKEN.detail
    assert row["state"] == "ready"


def test_a_probe_that_fails_leaves_the_template_unchecked_not_refused() -> None:
    ctx, clock, _ = context_with(RuntimeError("boom"))
    d = ctx.acquire(alias("a"))
    clock.advance(START_TIME)
    clock.advance(PROBE_TIME)
    assert result_of(d).chat_template_error is None
    (row,) = ctx.running()
    assert row["chat_template"] == "unchecked"
    assert "boom" not in (row["chat_template_detail"] or "")


def test_a_server_that_dies_during_the_probe_is_not_leased() -> None:
    ctx, clock, probe = context_with(CHECKED_OK)
    d = ctx.acquire(alias("a"))
    clock.advance(START_TIME)
    StubProcess.spawned[0].crash()
    clock.advance(PROBE_TIME)  # the dead server's verdict arrives: it must not grant
    assert result_of(d) is None
    assert len(StubProcess.spawned) == 2  # a fresh start for the waiting request
    clock.advance(START_TIME)
    clock.advance(PROBE_TIME)
    assert result_of(d).base_url == StubProcess.spawned[1].base_url
    assert len(probe.calls) == 2


def test_a_server_being_checked_is_not_evicted_for_another_model() -> None:
    ctx, clock, _ = context_with(CHECKED_OK)
    first = ctx.acquire(alias("a"))
    clock.advance(START_TIME)  # 'a' is up, its template is being checked
    second = ctx.acquire(alias("b"))
    assert StubProcess.spawned[0].state == "ready"  # the swap waits for the verdict
    clock.advance(PROBE_TIME)
    lease = result_of(first)
    assert isinstance(lease, Lease) and lease.alias == "a"
    assert len(StubProcess.spawned) == 1 and result_of(second) is None
    lease.release()
    clock.pump([STOP_TIME, START_TIME, PROBE_TIME])
    assert result_of(second).alias == "b"
