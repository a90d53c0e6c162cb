"""The draws: plans are a function of the seed and the index, cover the vocabulary, and
expect what the fake's counting rule says."""

from __future__ import annotations

from harness.chaos.draw import generate_plan, generate_plans
from harness.chaos.kinds import (
    CHAT,
    COMPLETIONS,
    EITHER,
    EMBEDDINGS,
    FAIL,
    KINDS,
    MANAGED,
    NET_KINDS,
    SUCCEED,
)
from harness.chaos.plan import stream_events
from tests.harness.chaos.support import SPAWN_SETTINGS


def test_plans_are_a_function_of_the_seed_and_index_only() -> None:
    plans = generate_plans(SPAWN_SETTINGS, 11, 300)
    again = generate_plans(SPAWN_SETTINGS, 11, 300)
    assert [p.to_json() for p in plans] == [p.to_json() for p in again]
    # Request i is the same whatever the number of requests (--only-request replays it).
    assert generate_plan(SPAWN_SETTINGS, 11, 123) == plans[123]
    other = generate_plans(SPAWN_SETTINGS, 12, 300)
    assert [p.spec for p in plans] != [p.spec for p in other]


def test_the_mix_covers_the_whole_vocabulary_in_spawn_mode() -> None:
    plans = generate_plans(SPAWN_SETTINGS, 1, 3000)
    assert {p.kind for p in plans} == set(KINDS)
    specs = ",".join(p.spec for p in plans)
    for key in (
        "ttft=",
        "token_delay=",
        "jitter=",
        "stall_after=",
        "close_after=",
        "drop_after=",
        "reset_after=",
        "error_after=",
        "legacy_error_after=",
        "malformed_after=",
        "duplicate_after=",
        "split_utf8",
        "crlf",
        "status=",
        "hang",
        "crash_after=",
        "p=0.5",
    ):
        assert key in specs, key
    toxics = {p.toxic.type for p in plans if p.toxic}
    assert toxics == {
        "latency",
        "bandwidth",
        "slicer",
        "slow_close",
        "reset_peer",
        "limit_data",
        "timeout",
    }
    assert all(p.route == MANAGED for p in plans if p.kind == "crash")
    assert all(p.alias is None for p in plans if p.kind in NET_KINDS)
    assert any(p.disconnect_after for p in plans)
    assert {p.endpoint for p in plans} == {CHAT, COMPLETIONS, EMBEDDINGS}
    assert {p.stream for p in plans} == {True, False}


def test_expectations_follow_the_fake_counting_rule() -> None:
    plans = generate_plans(SPAWN_SETTINGS, 5, 4000)
    assert stream_events(CHAT, 5, False) == 8 and stream_events(COMPLETIONS, 5, False) == 7
    for p in plans:
        if p.kind in ("reset", "close", "drop", "error", "legacy_error", "crash", "stall"):
            n = int(p.spec.split("_after=")[1].split(",")[0])
            fires = n < p.n_events if p.stream else n <= len(p.tokens)
            assert p.expect == (FAIL if fires else SUCCEED), p.describe()
        if p.kind in ("status", "hang", "net_reset_peer", "net_timeout"):
            assert p.expect == FAIL
        if p.kind == "net_limit_data":
            assert p.expect == EITHER
        if p.kind == "clean":
            assert (
                p.expect == SUCCEED
                and not p.spec
                and p.deadline
                == SPAWN_SETTINGS.margin
                + (SPAWN_SETTINGS.managed_margin if p.route == MANAGED else 0)
            )
        if p.kind == "stall" and p.expect == FAIL:
            assert p.delay >= (1.5 if p.stream else 2.5)
        assert p.skippable == ("p=0.5" in (p.spec or p.live_spec))
