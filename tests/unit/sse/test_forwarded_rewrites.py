"""What ForwardedSse changes in the frames it relays, and what it keeps byte for byte.

One ``created`` per stream and the client's model name, in the compact form llama-server
writes (a string replacement) and in any other spacing (a re-encode that keeps text as
text); ``id:`` fields, data-less events in the same read, and what ``on_event`` is given.
"""

from __future__ import annotations

import json
from typing import Any

from server_core.sse import Event
from tests.unit.sse.test_forwarded import events, start


def sent(request: Any) -> list[Event]:
    return [e for e in events(request) if isinstance(e, Event)]


def test_created_is_kept_from_the_first_chunk_in_the_compact_and_the_spaced_form() -> None:
    request, response, _, _, _ = start()
    response.send(b'data: {"id":"c","created":100,"choices":[]}\n\n')
    response.send(b'data: {"id":"c","created":101,"choices":[]}\n\n')
    # Another spacing: re-encoded, and its non-ASCII text stays text.
    response.send(
        b'data: {"id": "c", "created": 102, "choices": [{"delta": {"content": "\xc3\xa9"}}]}\n\n'
    )
    first, compact, spaced = sent(request)
    assert first.data == '{"id":"c","created":100,"choices":[]}'
    assert compact.data == '{"id":"c","created":100,"choices":[]}'
    assert json.loads(spaced.data or "")["created"] == 100
    assert "é" in (spaced.data or "") and "\\u00e9" not in (spaced.data or "")


def test_a_created_that_is_not_an_integer_is_left_alone() -> None:
    request, response, _, _, _ = start()
    response.send(b'data: {"created":true}\n\n')
    response.send(b'data: {"created":100}\n\n')
    response.send(b'data: {"created":101}\n\n')
    assert [e.data for e in sent(request)] == [
        '{"created":true}',  # a bool is no timestamp: not taken as the stream's
        '{"created":100}',
        '{"created":100}',
    ]


def test_the_model_is_rewritten_in_any_spacing_and_left_when_it_is_already_right() -> None:
    request, response, _, _, _ = start(model_name="gpt-4o-mini")
    response.send(b'data: {"model":"gemma","choices":[]}\n\n')
    response.send(b'data: {"model": "gemma", "choices": [{"delta": {"content": "\xc3\xa9"}}]}\n\n')
    response.send(b'data: {"model":"gpt-4o-mini","x":1}\n\n')
    response.send(b'data: {"choices":[]}\n\n')
    compact, spaced, right, none = sent(request)
    assert compact.data == '{"model":"gpt-4o-mini","choices":[]}'
    assert json.loads(spaced.data or "")["model"] == "gpt-4o-mini" and "é" in (spaced.data or "")
    assert right.data == '{"model":"gpt-4o-mini","x":1}'  # byte for byte
    assert none.data == '{"choices":[]}'


def test_a_top_level_model_wins_over_a_nested_one() -> None:
    request, response, _, _, _ = start(model_name="asked")
    response.send(b'data: {"model":"top","response":{"model":"inner"}}\n\n')
    (out,) = sent(request)
    payload = json.loads(out.data or "")
    assert payload["model"] == "asked" and payload["response"]["model"] == "inner"


def test_ids_are_relayed_and_a_data_less_event_does_not_stop_the_read() -> None:
    request, response, _, _, _ = start()
    response.send(b"event: note\n\n" + b'id: 7\ndata: {"choices":[]}\n\n')
    (out,) = sent(request)
    assert out.id == "7" and out.data == '{"choices":[]}'


def test_on_event_is_given_each_relayed_payload() -> None:
    seen: list[object] = []
    _, response, _, _, _ = start(on_event=seen.append)
    response.send(b'data: {"choices":[],"usage":{"prompt_tokens":3}}\n\n' + b"data: [DONE]\n\n")
    assert seen == [{"choices": [], "usage": {"prompt_tokens": 3}}]  # [DONE] is no payload
