"""The chat-template probe: its verdict, and how the shared context and router act on it."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from server_core.shared_context import ContextLimits, DefaultSharedContext
from server_core.template_check import (
    CHECKED_OK,
    ChatTemplateBroken,
    TemplateVerdict,
    probe_messages,
    verdict_for,
)
from tests.unit.test_router_state import LOCAL, make
from tests.unit.test_shared_context import START_TIME, StubProcess, alias, result_of

PROBE_TIME = 0.25
BROKEN = TemplateVerdict(False, "the chat template drops the messages (...): use --no-jinja")


def test_a_prompt_with_the_users_marker_carries_the_messages() -> None:
    messages = probe_messages("c0ffee")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert all("c0ffee" in m["content"] for m in messages)
    rendered = "<|im_start|>user\nHello. user-c0ffee<|im_end|>\n<|im_start|>assistant\n"
    assert verdict_for("c0ffee", rendered) == CHECKED_OK
    assert verdict_for("c0ffee", rendered).status == "ok"


def test_a_prompt_without_it_drops_them_and_says_which_flag_fixes_it() -> None:
    verdict = verdict_for("c0ffee", "gemma")
    assert verdict.ok is False and verdict.status == "drops_messages"
    assert '"gemma"' in verdict.detail
    assert "--no-jinja --chat-template NAME" in verdict.detail
    assert "--chat-template-file" in verdict.detail
    # Another probe's marker is not this one's.
    assert verdict_for("c0ffee", "user-deadbeef").ok is False
    long = verdict_for("c0ffee", "x" * 500)
    assert "x" * 57 + "..." in long.detail and "x" * 61 not in long.detail


def test_no_prompt_is_no_verdict() -> None:
    for rendered in (None, 3, ["user-c0ffee"]):
        verdict = verdict_for("c0ffee", rendered)
        assert verdict.ok is None and verdict.status == "unchecked"


class Probe:
    """A probe that takes Clock time and answers what the test says."""

    def __init__(self, clock: Clock, verdict: TemplateVerdict | Exception) -> None:
        self.clock = clock
        self.verdict = verdict
        self.calls: list[tuple[str, str]] = []

    def __call__(self, alias_name: str, base_url: str) -> defer.Deferred[TemplateVerdict]:
        self.calls.append((alias_name, base_url))
        d: defer.Deferred[TemplateVerdict] = defer.Deferred()

        def answer() -> None:
            if isinstance(self.verdict, Exception):
                d.errback(self.verdict)
            else:
                d.callback(self.verdict)

        self.clock.callLater(PROBE_TIME, answer)
        return d


def context_with(verdict: TemplateVerdict | Exception) -> tuple[DefaultSharedContext, Clock, Probe]:
    StubProcess.spawned = []
    clock = Clock()
    probe = Probe(clock, verdict)

    def factory(a: Any, on_state: Any) -> StubProcess:
        return StubProcess(a, on_state, clock)

    ctx = DefaultSharedContext(factory, clock=clock, limits=ContextLimits(), template_probe=probe)
    return ctx, clock, probe


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


@pytest_twisted.ensureDeferred
async def test_the_router_refuses_chat_but_not_completions_for_such_a_lease() -> None:
    router, client, context = make()
    context.lease.chat_template_error = BROKEN.detail
    with pytest.raises(ChatTemplateBroken) as caught:
        await router.forward("/chat/completions", {"model": "local", "messages": []})
    assert context.lease.released == 1
    assert client.sent == []
    error = caught.value.to_dict()["error"]
    assert error["code"] == "chat_template_drops_messages"
    assert f"'{LOCAL.name}'" in error["message"] and "/v1/completions" in error["message"]
    assert "--" not in error["message"]  # the flags are the operator's business (/running)
    await router.forward("/completions", {"model": "local", "prompt": "x"})
    assert client.sent[0]["url"].endswith("/v1/completions")
