"""Event sequencing: storage caps, framing, and the violations after ``[DONE]`` or an error."""

from __future__ import annotations

import pytest_twisted

from harness.client import (
    DONE,
    ERROR_EVENT,
)
from server_core.sse import DONE_FRAME
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
