"""Event sequencing: storage caps, framing, and the violations after ``[DONE]`` or an error."""

from __future__ import annotations

import json

import pytest_twisted

from harness.client import (
    DONE,
    ERROR_EVENT,
)
from harness.client._body import BodyState
from harness.client._result import StreamResult
from server_core.sse import DONE_FRAME, Event
from tests.harness.client.scripted import (
    ERROR_FRAME,
    Action,
    ScriptServer,
    chat_stream,
    chunk,
    run,
    writes,
)


@pytest_twisted.ensureDeferred
async def test_data_after_error_is_flagged(server: ScriptServer) -> None:
    server.script([*writes([ERROR_FRAME, chunk("late")]), ("finish",)])
    r = await run(server)
    assert r.outcome == ERROR_EVENT and r.after_error


@pytest_twisted.ensureDeferred
async def test_data_after_done_is_flagged(server: ScriptServer) -> None:
    server.script([*writes([chunk("a"), DONE_FRAME, chunk("b")]), ("finish",)])
    r = await run(server)
    assert r.outcome == DONE and r.after_done
    assert r.text == "a"


@pytest_twisted.ensureDeferred
async def test_malformed_json_event_counted(server: ScriptServer) -> None:
    server.script([*writes([chunk("a"), b"data: {not json\n\n", DONE_FRAME]), ("finish",)])
    r = await run(server)
    assert r.outcome == DONE and r.invalid_json == 1 and r.n_events == 3


@pytest_twisted.ensureDeferred
async def test_max_events_caps_storage_only(server: ScriptServer) -> None:
    server.script([*writes([*chat_stream(["a", "b", "c"]), DONE_FRAME]), ("finish",)])
    r = await run(server, max_events=2)
    assert r.outcome == DONE
    assert len(r.events) == 2 and len(r.chunks) == 2 and r.n_events == 6
    assert r.text == "abc" and len(r.gaps) == 5


@pytest_twisted.ensureDeferred
async def test_utf8_split_across_writes(server: ScriptServer) -> None:
    frame = chunk("né🙂")
    cut = frame.index("🙂".encode()) + 2  # inside the 4-byte emoji
    cut_e = frame.index("é".encode()) + 1  # inside the 2-byte é
    server.script(
        [
            ("write", frame[:cut_e]),
            ("wait", 0.01),
            ("write", frame[cut_e:cut]),
            ("wait", 0.01),
            ("write", frame[cut:]),
            ("write", DONE_FRAME),
            ("finish",),
        ]
    )
    r = await run(server)
    assert r.outcome == DONE and r.text == "né🙂"


@pytest_twisted.ensureDeferred
async def test_crlf_framing(server: ScriptServer) -> None:
    frames = [*chat_stream(["x", "y"], line_end="\r\n"), b"data: [DONE]\r\n\r\n"]
    # Split every frame between its CR and LF to exercise the pending-CR path.
    actions: list[Action] = []
    for f in frames:
        actions += [("write", f[:-1]), ("write", f[-1:])]
    server.script([*actions, ("finish",)])
    r = await run(server)
    assert r.outcome == DONE and r.text == "xy" and not r.after_done
    assert r.n_events == 5


# -- BodyState on its own ------------------------------------------------------


def sse_state(max_events: int | None = None) -> BodyState:
    state = BodyState(StreamResult(headers={"content-type": ["text/event-stream"]}), max_events, 8)
    state.begin(200)
    return state


def test_begin_picks_the_reader() -> None:
    assert sse_state().decoder is not None
    json_state = BodyState(StreamResult(), None, 8)
    json_state.begin(200)
    assert json_state.decoder is None and not json_state.http_error
    error_state = BodyState(StreamResult(headers={"content-type": ["text/event-stream"]}), None, 8)
    error_state.begin(503)
    assert error_state.http_error and error_state.decoder is None


def test_non_sse_bytes_are_kept_up_to_the_limit() -> None:
    state = BodyState(StreamResult(), None, 8)
    state.begin(200)
    state.arrived(b"12345", 1.0)
    state.arrived(b"67890", 2.0)
    assert bytes(state.buf) == b"12345678"
    assert state.result.bytes_received == 10 and state.result.t_first_byte == 1.0


def test_first_error_wins_and_later_events_are_violations() -> None:
    state = sse_state()
    state.on_event(Event(data=json.dumps({"error": "first"})), 1.0)
    state.on_event(Event(data=json.dumps({"error": "second"})), 2.0)
    state.on_event(Event(data="[DONE]"), 3.0)
    r = state.result
    assert r.error == {"message": "first"}
    assert r.after_error and r.done_after_error and not r.after_done
    assert r.gaps == [1.0, 1.0] and r.n_events == 3


def test_comment_and_leftover_after_done_are_violations() -> None:
    state = sse_state()
    state.on_event(Event(data="[DONE]"), 1.0)
    assert not state.result.after_done
    state.on_comment()
    assert state.result.after_done and state.result.comments == 1
    leftover = sse_state()
    leftover.on_event(Event(data="[DONE]"), 1.0)
    assert leftover.decoder is not None
    leftover.decoder.feed(b"data: par")
    leftover.end(0.0)
    assert leftover.result.after_done


def test_max_events_caps_storage_not_counting() -> None:
    state = sse_state(max_events=1)
    state.on_event(Event(data="{}"), 1.0)
    state.on_event(Event(data="[1]"), 2.0)
    state.on_event(Event(), 3.0)
    r = state.result
    assert len(r.events) == len(r.event_times) == 1 and r.n_events == 3
    assert r.chunks == [{}] and r.invalid_json == 1
