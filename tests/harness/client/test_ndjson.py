"""Ollama's NDJSON streams: read line by line as they arrive, judged by Ollama's rules
(complete = a last ``"done": true`` line; loss = one ``{"error": ...}`` line)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import ensureDeferred

from harness.client import (
    DONE,
    ERROR_EVENT,
    HTTP_ERROR,
    OLLAMA,
    TIMEOUT,
    TRUNCATED,
    NdjsonDecoder,
    StreamResult,
    request_dialect,
    stream_request,
)
from server_core.sse import Event
from server_core.sse.dialects import CHAT, Frame
from tests.harness.client.scripted import Action, ScriptServer, writes

NDJSON_HEADERS = {"Content-Type": "application/x-ndjson"}
TIMINGS = {
    "total_duration": 5_000_000,
    "load_duration": 1_000_000,
    "prompt_eval_count": 4,
    "prompt_eval_duration": 2_000_000,
    "eval_count": 2,
    "eval_duration": 2_000_000,
}


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


def chat_line(text: str) -> bytes:
    msg = {"role": "assistant", "content": text}
    return line({"model": "om", "created_at": "x", "message": msg, "done": False})


def chat_done(reason: str = "stop") -> bytes:
    msg = {"role": "assistant", "content": ""}
    return line({"model": "om", "message": msg, "done": True, "done_reason": reason, **TIMINGS})


def generate_line(text: str, done: bool = False) -> bytes:
    extra: dict[str, Any] = {"done_reason": "length", **TIMINGS} if done else {}
    return line({"model": "om", "response": text, "done": done, **extra})


ERROR_LINE = line({"error": "upstream lost"})


async def run_ollama(
    server: ScriptServer, actions: list[Action], path: str = "/api/chat", **kw: Any
) -> StreamResult:
    server.script(actions, headers=NDJSON_HEADERS)
    kw.setdefault("timeout", 5.0)
    return await stream_request(server.url(path), {"model": "om", "stream": True}, **kw)


def clean(r: StreamResult) -> bool:
    return not (r.after_done or r.done_after_error or r.after_error or r.invalid_json)


# -- the dialect --------------------------------------------------------------------------


def test_ollama_paths_and_name_choose_the_ollama_dialect() -> None:
    assert request_dialect("http://h/api/chat") is OLLAMA
    assert request_dialect("http://h/api/generate/") is OLLAMA
    assert request_dialect("http://h/api/tags") is CHAT  # not a stream route
    assert request_dialect("http://h/v1/chat/completions", "ollama") is OLLAMA


def test_the_dialect_reads_done_error_and_data_lines() -> None:
    assert OLLAMA.read(Event(data='{"done": true}'))[0] is Frame.COMPLETE
    assert OLLAMA.read(Event(data='{"done": false, "response": "a"}'))[0] is Frame.DATA
    assert OLLAMA.read(Event(data='{"error": "x"}'))[0] is Frame.ERROR
    assert OLLAMA.read(Event(data='{"done": "true"}'))[0] is Frame.DATA  # not the boolean
    assert OLLAMA.read(Event(data=""))[0] is Frame.MALFORMED
    assert OLLAMA.error_frame("gone") == b'{"error": "gone"}\n'


def test_decoder_splits_lines_across_writes_and_holds_the_rest() -> None:
    dec = NdjsonDecoder(max_line=64)
    assert dec.feed(b'{"a":') == [] and dec.buffered == 5
    assert dec.feed(b'1}\r\n{"b":2}\n{"c"') == [Event(data='{"a":1}'), Event(data='{"b":2}')]
    assert dec.finish() == [Event(data='{"c"')] and dec.buffered == 0
    assert dec.feed(b"\n") == [Event(data="")]  # a blank line is a line (and not JSON)
    with pytest.raises(ValueError, match="longer than 64"):
        dec.feed(b"x" * 65)


# -- complete streams ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_chat_stream_complete_with_text_reason_and_timings(server: ScriptServer) -> None:
    frames = [chat_line("Hel"), chat_line("lo 日本"), chat_done("length")]
    r = await run_ollama(server, [*writes(frames), ("finish",)])
    assert (r.outcome, r.dialect, r.text, r.finish_reason) == (
        DONE,
        "ollama",
        "Hello 日本",
        "length",
    )
    assert r.timings == TIMINGS and r.model == "om" and r.is_ndjson and r.is_stream
    assert r.n_events == 3 and len(r.chunks) == 3 and r.t_first_token is not None
    assert clean(r) and r.ids == set()


@pytest_twisted.ensureDeferred
async def test_generate_stream_text_from_response(server: ScriptServer) -> None:
    frames = [generate_line("a"), generate_line("b"), generate_line("", done=True)]
    r = await run_ollama(server, [*writes(frames), ("finish",)], path="/api/generate")
    assert (r.outcome, r.text, r.finish_reason, r.timings) == (DONE, "ab", "length", TIMINGS)


@pytest_twisted.ensureDeferred
async def test_lines_are_read_as_they_arrive_not_at_the_end(server: ScriptServer) -> None:
    # The body never ends: the first line must reach on_event all the same.
    seen: list[str | None] = []
    actions: list[Action] = [("write", chat_line("a")[:5]), ("write", chat_line("a")[5:])]
    server.script([*actions, ("stall",)], headers=NDJSON_HEADERS)
    d = ensureDeferred(
        stream_request(
            server.url("/api/chat"),
            {},
            timeout=5.0,
            idle_timeout=0.3,
            on_event=lambda ev, t: seen.append(ev.data),
        )
    )
    r = await d
    assert r.outcome == TIMEOUT and len(seen) == 1 and r.text == "a"


@pytest_twisted.ensureDeferred
async def test_last_line_without_newline_counts_when_the_body_is_complete(
    server: ScriptServer,
) -> None:
    frames = [chat_line("a"), chat_done().rstrip(b"\n")]
    r = await run_ollama(server, [*writes(frames), ("finish",)])
    assert r.outcome == DONE and r.text == "a" and clean(r)


@pytest_twisted.ensureDeferred
async def test_a_line_cut_by_a_reset_is_truncation_not_bad_json(server: ScriptServer) -> None:
    r = await run_ollama(
        server, [("write", chat_line("a") + chat_done()[:20]), ("wait", 0.02), ("reset",)]
    )
    assert r.outcome == TRUNCATED and r.invalid_json == 0 and r.text == "a"


# -- the other endings and the violations ----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_error_line_is_the_error_ending(server: ScriptServer) -> None:
    r = await run_ollama(server, [*writes([chat_line("a"), ERROR_LINE]), ("close",)])
    assert r.outcome == ERROR_EVENT and r.error == {"message": "upstream lost"}
    assert clean(r) and r.text == "a"


@pytest.mark.parametrize("ending", [("finish",), ("close",), ("reset",)])
@pytest_twisted.ensureDeferred
async def test_no_done_line_is_truncated(server: ScriptServer, ending: Action) -> None:
    r = await run_ollama(
        server, [*writes([chat_line("a"), chat_line("b")]), ("wait", 0.02), ending]
    )
    assert r.outcome == TRUNCATED and r.text == "ab" and clean(r)


@pytest_twisted.ensureDeferred
async def test_anything_after_done_is_a_violation(server: ScriptServer) -> None:
    frames = [chat_line("a"), chat_done(), chat_line("late")]
    r = await run_ollama(server, [*writes(frames), ("finish",)])
    assert r.outcome == DONE and r.after_done and r.text == "a"
    # A partial line after it too.
    r = await run_ollama(server, [*writes([chat_done()]), ("write", b"{"), ("finish",)])
    assert r.outcome == DONE and r.after_done


@pytest_twisted.ensureDeferred
async def test_done_after_an_error_is_a_violation(server: ScriptServer) -> None:
    frames = [chat_line("a"), ERROR_LINE, chat_done()]
    r = await run_ollama(server, [*writes(frames), ("finish",)])
    assert r.outcome == ERROR_EVENT and r.done_after_error and not r.after_error


@pytest_twisted.ensureDeferred
async def test_a_line_after_an_error_is_a_violation(server: ScriptServer) -> None:
    frames = [chat_line("a"), ERROR_LINE, chat_line("b")]
    r = await run_ollama(server, [*writes(frames), ("finish",)])
    assert r.outcome == ERROR_EVENT and r.after_error and not r.done_after_error


@pytest.mark.parametrize("bad", [b"not json\n", b"\n", b": keep-alive\n", b"[1, 2]\n"])
@pytest_twisted.ensureDeferred
async def test_a_line_that_is_not_a_json_object_is_a_violation(
    server: ScriptServer, bad: bytes
) -> None:
    frames = [chat_line("a"), bad, chat_done()]
    r = await run_ollama(server, [*writes(frames), ("finish",)])
    assert r.outcome == DONE and r.invalid_json == 1 and r.text == "a"


@pytest_twisted.ensureDeferred
async def test_the_content_type_chooses_ndjson_whatever_the_path(server: ScriptServer) -> None:
    r = await run_ollama(server, [*writes([chat_line("x"), chat_done()]), ("finish",)], path="/x")
    assert r.outcome == DONE and r.dialect == "ollama" and r.text == "x"
    # The same bytes declared as SSE are no Ollama stream: nothing is complete.
    server.script([*writes([chat_line("x"), chat_done()]), ("finish",)])
    r = await stream_request(server.url("/api/chat"), {}, timeout=5.0)
    assert r.outcome == TRUNCATED


# -- whole answers and errors ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_whole_chat_and_generate_answers(server: ScriptServer) -> None:
    body = chat_done("stop").replace(b'"content": ""', b'"content": "hi there"')
    server.script([("write", body), ("finish",)], headers={"Content-Type": "application/json"})
    r = await stream_request(server.url("/api/chat"), {"stream": False}, timeout=5.0)
    assert (r.outcome, r.text, r.finish_reason, r.timings) == (DONE, "hi there", "stop", TIMINGS)
    assert r.dialect == "ollama" and not r.is_stream
    server.script(
        [("write", generate_line("whole", done=True)), ("finish",)],
        headers={"Content-Type": "application/json"},
    )
    r = await stream_request(server.url("/api/generate"), {"stream": False}, timeout=5.0)
    assert (r.outcome, r.text, r.finish_reason) == (DONE, "whole", "length")


@pytest_twisted.ensureDeferred
async def test_an_error_before_the_first_line_is_an_http_error(server: ScriptServer) -> None:
    server.script(
        [("write", b'{"error": "model \\"x\\" not found"}'), ("finish",)],
        status=404,
        headers={"Content-Type": "application/json"},
    )
    r = await stream_request(server.url("/api/chat"), {}, timeout=5.0)
    assert r.outcome == HTTP_ERROR and r.status == 404
    assert r.error == {"message": 'model "x" not found'}
