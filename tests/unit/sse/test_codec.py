"""SSE codec: encoder shapes, decoder edge cases, and the round-trip property."""

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server_core.sse import (
    DONE_FRAME,
    Comment,
    Event,
    SseDecoder,
    decode_all,
    encode_comment,
    encode_event,
)


def test_encode_multiline_data_becomes_several_data_lines() -> None:
    assert encode_event("a\nb") == b"data: a\ndata: b\n\n"


def test_encode_all_fields() -> None:
    frame = encode_event("x", event="message", id="7", retry=1500)
    assert frame == b"event: message\nid: 7\nretry: 1500\ndata: x\n\n"


def test_encode_crlf_line_ends() -> None:
    assert encode_event("x", line_end="\r\n") == b"data: x\r\n\r\n"


def test_encode_comment() -> None:
    assert encode_comment("keep-alive") == b": keep-alive\n\n"
    assert encode_comment() == b":\n\n"


@pytest.mark.parametrize("bad", [{"event": "a\nb"}, {"id": "1\r"}, {"retry": -1}])
def test_encode_rejects_invalid_fields(bad: dict) -> None:
    with pytest.raises(ValueError):
        encode_event("x", **bad)


def test_encode_needs_a_field() -> None:
    with pytest.raises(ValueError):
        encode_event()


def test_done_frame_decodes_as_done() -> None:
    (event,) = decode_all(DONE_FRAME)
    assert isinstance(event, Event) and event.is_done


@pytest.mark.parametrize("brk", [b"\n", b"\r\n", b"\r"])
def test_decoder_line_ends(brk: bytes) -> None:
    raw = b"data: one" + brk + b"data: two" + brk + brk + b": ping" + brk + b"data: x" + brk + brk
    assert decode_all(raw) == [Event(data="one\ntwo"), Comment("ping"), Event(data="x")]


def test_decoder_crlf_split_between_cr_and_lf() -> None:
    dec = SseDecoder()
    out = dec.feed(b"data: a\r")
    out += dec.feed(b"\n\r")
    out += dec.feed(b"\n")
    assert out == [Event(data="a")]
    assert dec.at_boundary


def test_decoder_utf8_split_inside_character() -> None:
    raw = "data: h\u00e9llo \u4e16\u754c \U0001f600\n\n".encode()
    dec = SseDecoder()
    out = []
    for i in range(len(raw)):
        out += dec.feed(raw[i : i + 1])
    assert out == [Event(data="h\u00e9llo \u4e16\u754c \U0001f600")]


def test_decoder_keeps_nonstandard_fields() -> None:
    (event,) = decode_all(b'error: {"code":500}\n\n')
    assert isinstance(event, Event)
    assert event.data is None and event.get("error") == '{"code":500}'


def test_decoder_field_without_space_and_without_colon() -> None:
    assert decode_all(b"data:x\ndata\n\n") == [Event(data="x\n")]


def test_decoder_unterminated_event_is_dropped_at_finish() -> None:
    dec = SseDecoder()
    assert dec.feed(b"data: partial\n") == []
    assert not dec.at_boundary
    assert dec.finish() == []


def test_decoder_id_only_is_not_dispatched() -> None:
    assert decode_all(b"id: 3\n\n") == []


def test_decoder_caps_line_length() -> None:
    dec = SseDecoder(max_line=16)
    with pytest.raises(ValueError):
        dec.feed(b"data: " + b"x" * 64)


_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40
)
_single_line = _text.map(lambda s: s.replace("\r", "").replace("\n", ""))
# Data with line breaks of every kind inside it, a lone CR included: plain text from
# ``_text`` rarely draws one, and the encoder must turn each into a data line of its own.
_data = st.lists(_text | st.sampled_from(["\r", "\n", "\r\n"]), max_size=6).map("".join)
_events = st.builds(
    Event,
    data=_data,
    event=st.none() | _single_line.filter(bool),
    id=st.none() | _single_line,
    retry=st.none() | st.integers(min_value=0, max_value=10**6),
)
_items = st.lists(st.one_of(_events, st.builds(Comment, _single_line)), max_size=12)


def _encode(item: Event | Comment, line_end: str) -> bytes:
    if isinstance(item, Comment):
        return encode_comment(item.text, line_end=line_end)
    return encode_event(
        item.data, event=item.event, id=item.id, retry=item.retry, line_end=line_end
    )


def _expected(item: Event | Comment) -> Event | Comment:
    if isinstance(item, Event) and item.data is not None:
        # The encoder normalises CR / CRLF inside data to LF.
        return Event(
            data=item.data.replace("\r\n", "\n").replace("\r", "\n"),
            event=item.event,
            id=item.id,
            retry=item.retry,
        )
    return item


@given(
    items=_items,
    line_end=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20),
)
def test_roundtrip_any_chunking(items: list, line_end: str, cuts: list[int]) -> None:
    payload = b"".join(_encode(i, line_end) for i in items)
    points = sorted({c % (len(payload) + 1) for c in cuts})
    chunks = [payload[a:b] for a, b in zip([0, *points], [*points, len(payload)], strict=True)]
    dec = SseDecoder()
    out: list = []
    for chunk in chunks:
        out += dec.feed(chunk)
    # The id field persists per the standard only in the client; the decoder reports per event.
    assert out == [_expected(i) for i in items]
    assert dec.at_boundary


def test_decoder_caps_event_size_across_lines() -> None:
    dec = SseDecoder(max_line=100, max_event=1000)
    with pytest.raises(ValueError, match="event larger"):
        for _ in range(50):
            dec.feed(b"data: " + b"x" * 50 + b"\n")


def test_importing_the_package_loads_only_the_pure_codec() -> None:
    # The harness imports server_core.sse: it must not drag in twisted.web or the writers.
    probe = (
        "import sys, server_core.sse; "
        "print(sorted(m for m in sys.modules if m.startswith(('twisted.web', 'server_core'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['server_core', 'server_core.sse', 'server_core.sse.codec']"


def test_the_twisted_writers_load_on_first_use() -> None:
    import server_core.sse as sse
    from server_core.sse.direct import DirectEvent, DirectSse
    from server_core.sse.forwarded import ForwardedSse
    from server_core.sse.writer import SseResponse

    assert (sse.SseResponse, sse.DirectSse, sse.DirectEvent, sse.ForwardedSse) == (
        SseResponse,
        DirectSse,
        DirectEvent,
        ForwardedSse,
    )
    with pytest.raises(AttributeError):
        sse.NoSuchName  # noqa: B018


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"])
def test_a_lone_cr_inside_data_round_trips_as_a_line_break(line_end: str) -> None:
    frame = encode_event("a\rb\r\nc\nd\r", line_end=line_end)
    assert (
        frame
        == line_end.join(["data: a", "data: b", "data: c", "data: d", "data: ", "", ""]).encode()
    )
    assert decode_all(frame) == [Event(data="a\nb\nc\nd\n")]


def test_a_lone_cr_inside_a_comment_splits_it_into_lines() -> None:
    assert encode_comment("a\rb") == b": a\n: b\n\n"
