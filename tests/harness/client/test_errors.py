"""Error shapes: how each dialect of "error" ends up in ``StreamResult.error``."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted

from harness.client import (
    ERROR_EVENT,
    HTTP_ERROR,
)
from harness.client._errors import error_from_body, normalise_error, parse_legacy_error
from server_core.sse import DONE_FRAME
from tests.harness.client.scripted import (
    ERROR_FRAME,
    ERROR_OBJ,
    LEGACY_ERROR_FRAME,
    ScriptServer,
    chat_stream,
    chunk,
    run,
    writes,
)


@pytest_twisted.ensureDeferred
async def test_standard_error_event(server: ScriptServer) -> None:
    server.script([*writes([*chat_stream(["a"])[:2], ERROR_FRAME]), ("finish",)])
    r = await run(server)
    assert r.outcome == ERROR_EVENT
    assert r.error == ERROR_OBJ
    assert r.text == "a"
    assert not any(e.is_done for e in r.events)
    assert not r.done_after_error and not r.after_error


@pytest_twisted.ensureDeferred
async def test_legacy_error_line_then_done(server: ScriptServer) -> None:
    server.script([*writes([chunk("x"), LEGACY_ERROR_FRAME, DONE_FRAME]), ("finish",)])
    r = await run(server)
    assert r.outcome == ERROR_EVENT
    assert r.done_after_error
    assert r.error == ERROR_OBJ
    assert r.events[1].get("error") is not None and r.events[2].is_done


@pytest_twisted.ensureDeferred
async def test_http_error_json_body(server: ScriptServer) -> None:
    err = {"error": {"code": 400, "message": "Expected 'messages' to be an array",
                     "type": "invalid_request_error"}}  # fmt: skip
    server.script(
        [("write", json.dumps(err).encode()), ("finish",)],
        status=400,
        headers={"Content-Type": "application/json"},
    )
    r = await run(server)
    assert r.outcome == HTTP_ERROR and r.status == 400
    assert r.error == err["error"]
    assert r.body == json.dumps(err).encode()
    assert r.events == []


@pytest_twisted.ensureDeferred
async def test_http_error_non_json_body(server: ScriptServer) -> None:
    server.script(
        [("write", b"<html>busy</html>"), ("finish",)],
        status=503,
        headers={"Content-Type": "text/html"},
    )
    r = await run(server)
    assert r.outcome == HTTP_ERROR and r.status == 503
    assert r.error is None and r.body == b"<html>busy</html>"


@pytest_twisted.ensureDeferred
async def test_non_stream_error_object_with_200(server: ScriptServer) -> None:
    server.script(
        [("write", json.dumps({"error": "boom"}).encode()), ("finish",)],
        headers={"Content-Type": "application/json"},
    )
    r = await run(server)
    assert r.outcome == ERROR_EVENT and r.error == {"message": "boom"}


# -- the parsers on their own --------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"code": 1}, {"code": 1}),
        ("boom", {"message": "boom"}),
        (42, {"message": "42"}),
        (["a"], {"message": '["a"]'}),
    ],
)
def test_normalise_error(value: Any, expected: dict[str, Any]) -> None:
    assert normalise_error(value) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (json.dumps(ERROR_OBJ), ERROR_OBJ),
        (json.dumps({"error": ERROR_OBJ}), ERROR_OBJ),
        ('"slot gone"', {"message": "slot gone"}),
        ("not json", {"message": "not json"}),
    ],
)
def test_parse_legacy_error(raw: str, expected: dict[str, Any]) -> None:
    assert parse_legacy_error(raw) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (json.dumps({"error": ERROR_OBJ}).encode(), ERROR_OBJ),
        (b'{"error": "busy"}', {"message": "busy"}),
        (b'{"detail": "x"}', {"detail": "x"}),
        (b"[1]", None),
        (b"<html>", None),
    ],
)
def test_error_from_body(body: bytes, expected: dict[str, Any] | None) -> None:
    assert error_from_body(body) == expected
