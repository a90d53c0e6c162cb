"""Reading chunks: text, reasoning and finish reason out of each dialect."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted

from harness.client import (
    DONE,
    stream_request,
)
from harness.client._chunks import Transcript
from harness.client._result import StreamResult
from server_core.sse import encode_event
from tests.harness.client.scripted import (
    ScriptServer,
    writes,
)


@pytest_twisted.ensureDeferred
async def test_llama_native_completion_content(server: ScriptServer) -> None:
    frames = [
        encode_event(json.dumps({"content": "to", "stop": False})),
        encode_event(json.dumps({"content": "ken", "stop": True, "stop_type": "limit"})),
    ]
    server.script([*writes(frames), ("finish",)])
    r = await stream_request(server.url("/completion"), {"prompt": "p"}, timeout=5.0)
    # llama-server's native endpoint ends with its "stop": true event, not [DONE].
    assert r.outcome == DONE and r.dialect == "native"
    assert r.text == "token" and r.finish_reason == "length"


# -- Transcript on its own -----------------------------------------------------


def absorbed(objs: list[dict[str, Any]], *, stream: bool = True) -> StreamResult:
    r = StreamResult()
    transcript = Transcript(r)
    for t, obj in enumerate(objs, start=1):
        transcript.absorb(obj, float(t), stream=stream)
    transcript.write()
    return r


def test_chat_deltas_join_and_the_first_text_is_the_first_token() -> None:
    r = absorbed(
        [
            {"id": "c", "model": "m1", "choices": [{"delta": {"role": "assistant"}}]},
            {"id": "c", "model": "m2", "choices": [{"delta": {"content": "Hi"}}]},
            {"id": "c", "choices": [{"delta": {"content": "!"}, "finish_reason": "stop"}]},
            {"id": "c", "choices": [], "usage": {"total_tokens": 3}},
        ]
    )
    assert r.text == "Hi!" and r.reasoning == ""
    assert r.t_first_token == 2.0
    assert r.model == "m1" and r.ids == {"c"}
    assert r.finish_reason == "stop" and r.usage == {"total_tokens": 3}


def test_reasoning_counts_as_the_first_token() -> None:
    r = absorbed([{"choices": [{"delta": {"reasoning_content": "hm", "content": ""}}]}])
    assert r.reasoning == "hm" and r.text == "" and r.t_first_token == 1.0


def test_non_stream_message_and_completions_text() -> None:
    message = {"choices": [{"message": {"content": "whole"}, "finish_reason": "length"}]}
    assert absorbed([message], stream=False).text == "whole"
    assert absorbed([{"choices": [{"text": "ok"}]}]).text == "ok"


@pytest.mark.parametrize(
    ("stop_type", "finish"), [("eos", "stop"), ("word", "stop"), ("limit", "length"), ("x", "x")]
)
def test_native_stop_type_maps_to_finish_reason(stop_type: str, finish: str) -> None:
    r = absorbed([{"content": "a", "stop": True, "stop_type": stop_type}])
    assert r.text == "a" and r.finish_reason == finish


def test_odd_shapes_carry_no_text() -> None:
    r = absorbed([{"choices": ["x"]}, {"choices": []}, {"other": 1}, {"content": None}])
    assert r.text == "" and r.t_first_token is None and r.finish_reason is None
