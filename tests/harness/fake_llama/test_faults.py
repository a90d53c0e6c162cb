"""The fault SPEC language: syntax, errors, parts, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.fake_llama import FaultSpecError, parse_duration, parse_faults
from harness.fake_llama.faults import COUNT_KEYS, DURATION_KEYS, PROCESS_KEYS, REQUEST_KEYS


def test_durations_take_ms_s_and_bare_ms() -> None:
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2s") == 2.0
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("20") == 0.02
    for bad in ("", "ms", "5m", "-1s", "1h", "abc"):
        with pytest.raises(FaultSpecError):
            parse_duration(bad)


def test_spec_parses_every_kind() -> None:
    f = parse_faults(
        "load_delay=2s, crash_on_load, ttft=500ms,token_delay=20,jitter=5ms,"
        "reset_after=5,status=503,p=0.3,split_utf8,crlf,ping=100ms"
    )
    assert f.load_delay == 2.0
    assert f.crash_on_load == 0.0
    assert f.ttft == 0.5 and f.token_delay == 0.02 and f.jitter == 0.005
    assert f.reset_after == 5 and f.status == 503 and f.p == 0.3
    assert f.split_utf8 and f.crlf and f.ping == 0.1
    assert f.close_after is None and not f.hang
    assert parse_faults("crash_on_load=300ms").crash_on_load == pytest.approx(0.3)


@pytest.mark.parametrize(
    "spec",
    ["nope=1", "reset_after=-1", "reset_after=x", "status=99", "status=600", "p=1.5", "hang=2",
     "ttft", "ttft=soon"],
)  # fmt: skip
def test_spec_errors_name_the_item(spec: str) -> None:
    with pytest.raises(FaultSpecError) as e:
        parse_faults(spec)
    assert spec.split("=")[0] in str(e.value)


def test_process_and_request_parts_split_and_merge() -> None:
    f = parse_faults("load_delay=1s,ignore_sigterm,ttft=10ms,reset_after=3")
    assert f.process_part().keys == {"load_delay", "ignore_sigterm"}
    assert f.request_part().keys == {"ttft", "reset_after"}
    merged = f.merged(parse_faults("ttft=20ms,stall_after=2"))
    assert merged.ttft == 0.02 and merged.stall_after == 2 and merged.reset_after == 3
    with pytest.raises(FaultSpecError):
        parse_faults("load_delay=1s", allowed=REQUEST_KEYS)
    assert PROCESS_KEYS.isdisjoint(REQUEST_KEYS)


_item = st.one_of(
    st.sampled_from(sorted(DURATION_KEYS)).flatmap(
        lambda k: st.integers(0, 100_000).map(lambda ms: f"{k}={ms}ms")
    ),
    st.sampled_from(sorted(COUNT_KEYS)).flatmap(
        lambda k: st.integers(0, 1000).map(lambda n: f"{k}={n}")
    ),
    st.sampled_from(["hang", "split_utf8", "crlf", "never_ready", "bind_fail", "crash_on_load"]),
    st.integers(100, 599).map(lambda s: f"status={s}"),
    st.integers(0, 100).map(lambda p: f"p={p / 100}"),
)


@given(st.lists(_item, max_size=8))
def test_spec_round_trips(items: list[str]) -> None:
    f = parse_faults(",".join(items))
    again = parse_faults(f.to_spec())
    assert again == f
    assert again.keys == f.keys
