"""One call's machinery: the timers, ``disconnect_after``, cancelling, ``on_event``, timings."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred

from harness.client import (
    DISCONNECTED,
    DONE,
    TIMEOUT,
)
from server_core.sse import DONE_FRAME, Event, encode_comment
from tests.harness.client.scripted import (
    Action,
    ScriptServer,
    chat_stream,
    chunk,
    ended,
    run,
    writes,
)


@pytest_twisted.ensureDeferred
async def test_stall_hits_idle_timeout(server: ScriptServer) -> None:
    server.script([*writes(chat_stream(["a"])[:2]), ("stall",)])
    r = await run(server, idle_timeout=0.2)
    assert r.outcome == TIMEOUT
    assert r.end_reason == "idle_timeout"
    assert r.n_events == 2 and r.text == "a"
    assert r.duration is not None and 0.2 <= r.duration < 3.0
    # We aborted: the server sees its client go away.
    assert await ended(server) == "lost"


@pytest_twisted.ensureDeferred
async def test_comments_keep_idle_timeout_away(server: ScriptServer) -> None:
    ping: list[Action] = [("wait", 0.05), ("write", encode_comment("keep-alive"))]
    server.script([("write", chunk("a")), *(ping * 6), ("write", DONE_FRAME), ("finish",)])
    r = await run(server, idle_timeout=0.2)
    assert r.outcome == DONE
    assert r.comments == 6
    assert r.n_events == 2 and len(r.gaps) == 1 and r.gaps[0] >= 0.2


@pytest_twisted.ensureDeferred
async def test_hang_before_headers_hits_total_timeout(server: ScriptServer) -> None:
    server.script([("stall",)])
    r = await run(server, timeout=0.2)
    assert r.outcome == TIMEOUT
    assert r.status is None and r.end_reason == "timeout"
    assert await ended(server) == "lost"


@pytest_twisted.ensureDeferred
async def test_done_then_hang_stays_done(server: ScriptServer) -> None:
    server.script([*writes([chunk("a"), DONE_FRAME]), ("stall",)])
    r = await run(server, idle_timeout=0.2)
    assert r.outcome == DONE and r.end_reason == "idle_timeout"


@pytest_twisted.ensureDeferred
async def test_disconnect_after_aborts_connection(server: ScriptServer) -> None:
    frames = chat_stream([f"w{i}" for i in range(30)])
    actions: list[Action] = []
    for f in frames:
        actions += [("write", f), ("wait", 0.01)]
    server.script([*actions, ("write", DONE_FRAME), ("finish",)])
    r = await run(server, disconnect_after=3)
    assert r.outcome == DISCONNECTED
    assert r.end_reason == "client_abort"
    assert r.n_events == 3 and r.text == "w0w1"
    assert await ended(server) == "lost"


@pytest_twisted.ensureDeferred
async def test_disconnect_after_done_keeps_done(server: ScriptServer) -> None:
    server.script([*writes([chunk("a"), DONE_FRAME]), ("stall",)])
    r = await run(server, disconnect_after=2)
    assert r.outcome == DONE


@pytest_twisted.ensureDeferred
async def test_caller_cancel_aborts(server: ScriptServer) -> None:
    server.script([("write", chunk("a")), ("stall",)])
    got: Deferred[None] = Deferred()

    def on_event(ev: Event, t: float) -> None:
        if not got.called:
            got.callback(None)

    d = ensureDeferred(run(server, on_event=on_event))
    await got.addTimeout(3.0, reactor)
    d.cancel()
    with pytest.raises(CancelledError):
        await d
    assert await ended(server) == "lost"


@pytest_twisted.ensureDeferred
async def test_on_event_exception_propagates_and_aborts(server: ScriptServer) -> None:
    server.script([("write", chunk("a")), ("stall",)])

    def boom(ev: Event, t: float) -> None:
        raise KeyError("callback bug")

    with pytest.raises(KeyError, match="callback bug"):
        await run(server, on_event=boom)
    assert await ended(server) == "lost"


@pytest_twisted.ensureDeferred
async def test_timings_are_ordered(server: ScriptServer) -> None:
    actions: list[Action] = [("wait", 0.03)]
    for f in [*chat_stream(["a", "b", "c"]), DONE_FRAME]:
        actions += [("write", f), ("wait", 0.02)]
    server.script([*actions, ("finish",)])
    r = await run(server)
    assert r.outcome == DONE
    assert r.t_headers is not None and r.t_first_byte is not None
    assert r.t_first_token is not None and r.t_end is not None
    assert r.t_start <= r.t_headers <= r.t_first_byte <= r.t_first_token <= r.t_end
    assert r.ttfb is not None and r.ttfb >= 0.03
    assert r.ttft is not None and r.ttft >= r.ttfb
    assert len(r.gaps) == r.n_events - 1 == 5
    assert all(g >= 0 for g in r.gaps)
    assert r.event_times == sorted(r.event_times)
    assert sum(r.gaps) == pytest.approx(r.event_times[-1] - r.event_times[0])
    # The role chunk carries no text; the first token is the second event.
    assert r.t_first_token == r.event_times[1]
