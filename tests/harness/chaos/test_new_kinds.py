"""The kinds added later (ping, live_fault, embeddings, startup, freeze): what they
draw, what the judge accepts as their honest end and what it flags; and the first
mix still draws, seed for seed, what it drew before they existed."""

from __future__ import annotations

import dataclasses
import hashlib

from harness.chaos.actions import Freeze
from harness.chaos.collateral import attribute_collateral
from harness.chaos.draw import generate_plans
from harness.chaos.judge import judge
from harness.chaos.kinds import (
    CHAT,
    EMBEDDINGS,
    FAIL,
    LIVE,
    MANAGED,
    NEW_KINDS,
    STARTUP,
    SUCCEED,
)
from harness.chaos.plan import RequestPlan
from harness.chaos.records import RequestRecord
from harness.client import StreamResult
from harness.fake_llama import embedding_vector
from server_core.sse import Event
from tests.harness.chaos.support import (
    FIRST_SPAWN_SETTINGS,
    SPAWN_SETTINGS,
    make_plan,
    make_result,
)

# sha256 of the first 400 plans of seed 7 of the first mix, as drawn by the runner
# before the later kinds existed (commit 77dd59c).
FIRST_MIX_SEED_7 = "f48e177f330a649e08fe12ab84eb99339c4c842e84141e4fb47b54a3f6ceaff8"


def _fingerprint(plans: list[RequestPlan]) -> str:
    rows = [(p.describe(), p.body, round(p.deadline, 6), p.expect) for p in plans]
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def _of(kind: str, n: int = 3000, seed: int = 4) -> list[RequestPlan]:
    plans = [p for p in generate_plans(SPAWN_SETTINGS, seed, n) if p.kind == kind]
    assert len(plans) > 10, kind
    return plans


def test_the_first_mix_draws_what_it_drew_before_the_new_kinds() -> None:
    assert _fingerprint(generate_plans(FIRST_SPAWN_SETTINGS, 7, 400)) == FIRST_MIX_SEED_7
    # Leaving the new kinds out of a run that offers them changes nothing either.
    offered = dataclasses.replace(SPAWN_SETTINGS, kinds=FIRST_SPAWN_SETTINGS.kinds)
    assert _fingerprint(generate_plans(offered, 7, 400)) == FIRST_MIX_SEED_7


def test_every_new_kind_is_drawn_in_spawn_mode_and_only_there() -> None:
    kinds = {p.kind for p in generate_plans(SPAWN_SETTINGS, 1, 3000)}
    assert set(NEW_KINDS) <= kinds
    # Target mode with its timeouts offers ping only: no fakes of its own, no child.
    target = dataclasses.replace(FIRST_SPAWN_SETTINGS, managed_alias=None, lanes=0)
    target = dataclasses.replace(target, kinds=SPAWN_SETTINGS.kinds)
    assert set(target.enabled_kinds()) & set(NEW_KINDS) == {"ping"}


def test_ping_waits_before_the_first_event_and_fails_after_a_stall() -> None:
    plans = _of("ping")
    idle = SPAWN_SETTINGS.idle_timeout
    assert idle is not None
    before = [p for p in plans if p.expect == SUCCEED]
    after = [p for p in plans if p.expect == FAIL]
    assert before and after and all(p.stream for p in plans)
    for p in before:
        ttft = int(p.spec.split("ttft=")[1].split("ms")[0]) / 1000
        assert ttft > idle and "ping=" in p.spec
    for p in after:
        n = int(p.spec.split("stall_after=")[1].split(",")[0])
        assert 1 <= n < p.n_events and "ping=" in p.spec
        assert p.delay >= idle  # the idle timeout ends it


def test_live_fault_goes_by_post_fault_not_by_header() -> None:
    plans = _of("live_fault")
    assert all(p.route == LIVE and p.alias == "chaos-live" and not p.spec for p in plans)
    assert all(p.live_spec for p in plans if p.expect == FAIL)
    assert any(p.live_spec.startswith("status=") and p.expect == FAIL for p in plans)


def test_embeddings_expect_the_fakes_vectors_or_an_error() -> None:
    plans = _of("embeddings")
    for p in plans:
        assert p.endpoint == EMBEDDINGS and not p.stream and p.alias == "chaos-embed"
        texts = p.body["input"] if isinstance(p.body["input"], list) else [p.body["input"]]
        assert p.vectors == tuple(tuple(embedding_vector(t, 0)) for t in texts)
        assert (p.expect == FAIL) == any(k in p.spec for k in ("status=", "hang"))
    assert {p.expect for p in plans} == {SUCCEED, FAIL}


def test_startup_fails_unless_the_child_only_loads_slowly() -> None:
    plans = _of("startup", n=6000)
    assert all(p.route == STARTUP for p in plans)
    assert {p.alias for p in plans} == {a for a, _ in SPAWN_SETTINGS.startup_aliases}
    for p in plans:
        assert p.expect == (SUCCEED if p.alias == "chaos-startup-slow" else FAIL)


def test_freeze_stops_the_managed_child_while_a_token_is_owed() -> None:
    plans = _of("freeze", n=6000)
    for p in plans:
        assert p.route == MANAGED and p.endpoint == CHAT and p.stream
        assert p.freeze_after is not None and 1 <= p.freeze_after <= len(p.tokens)
        gap = int(p.spec.split("token_delay=")[1].split("ms")[0])
        assert gap >= 200 and p.expect == FAIL and p.freezes_process


# -- the judge ------------------------------------------------------------------------


def _embed_plan(**kw: object) -> RequestPlan:
    vectors = ((0.6, 0.8), (1.0, 0.0))
    base = dict(
        endpoint=EMBEDDINGS,
        body={"model": "m", "input": ["a", "b"]},
        tokens=(),
        n_events=0,
        finish_reason="",
        vectors=vectors,
    )
    base.update(kw)
    return make_plan("embeddings", **base)


def _embed_result(vectors: list[list[float]]) -> StreamResult:
    body = {"data": [{"embedding": v, "index": i} for i, v in enumerate(vectors)], "model": "m"}
    return make_result(
        headers={"content-type": ["application/json"]}, text="", finish_reason=None, json_body=body
    )


def test_judge_accepts_the_fakes_vectors_and_flags_others() -> None:
    plan = _embed_plan()
    assert judge(plan, _embed_result([[0.6, 0.8], [1.0, 0.0]]), expected_model="m") == []
    codes = [
        [v.code for v in judge(plan, _embed_result(vs), expected_model="m")]
        for vs in ([[0.6, 0.8]], [[0.6, 0.8], [0.0, 1.0]], [[0.6], [1.0, 0.0]])
    ]
    assert codes == [["wrong_embedding"]] * 3
    failing = _embed_plan(expect=FAIL, spec="status=500")
    got = judge(failing, _embed_result([[0.6, 0.8], [1.0, 0.0]]), expected_model="m")
    assert [v.code for v in got] == ["done_despite_fault"]
    error = make_result("http_error", status=500, error={"message": "x"}, text="")
    assert judge(failing, error, expected_model="m") == []


def test_judge_wants_an_error_ending_for_a_frozen_child_or_a_ping_stall() -> None:
    for plan in (
        make_plan("freeze", route=MANAGED, expect=FAIL, freeze_after=2, freezes_process=True),
        make_plan("ping", expect=FAIL, spec="stall_after=3,ping=200ms"),
    ):
        honest = make_result("error_event", error={"message": "idle"}, text=" river")
        assert judge(plan, honest, expected_model="m") == []
        for dishonest, code in (
            (make_result(), "done_despite_fault"),  # a complete-looking stream
            (make_result(text=" river"), "done_despite_fault"),
            (make_result("truncated", text=" river"), "truncated"),
        ):
            assert [v.code for v in judge(plan, dishonest, expected_model="m")] == [code]


def test_judge_on_startup_faults() -> None:
    failing = make_plan("startup", route=STARTUP, expect=FAIL, alias="chaos-startup-crash")
    error = make_result("http_error", status=503, error={"message": "crashed"}, text="")
    assert judge(failing, error, expected_model="m") == []
    html = make_result("http_error", status=503, error=None, text="")
    assert [v.code for v in judge(failing, html, expected_model="m")] == ["bad_error_body"]
    slow = make_plan("startup", route=STARTUP, alias="chaos-startup-slow")
    got = [v.code for v in judge(slow, error, expected_model="m")]
    assert got == ["unexpected_failure"]


def test_a_freeze_excuses_the_managed_requests_it_held_up() -> None:
    def rec(plan: RequestPlan, result: StreamResult, t: tuple[float, float]) -> RequestRecord:
        r = RequestRecord(plan, plan.alias or "", "m", result, *t)
        r.violations = judge(plan, r.result, expected_model="m")
        return r

    frozen = make_plan(
        "freeze", index=1, alias="mm", expect=FAIL, freeze_after=1, freezes_process=True
    )
    bystander = make_plan(index=2, alias="mm")
    elsewhere = make_plan(index=3, alias="other")
    err = make_result("error_event", error={"message": "idle"}, text="")
    records = [
        rec(frozen, err, (0.0, 2.0)),
        rec(bystander, err, (0.5, 2.5)),
        rec(elsewhere, err, (0.5, 2.5)),
    ]
    attribute_collateral(records)
    assert [(r.collateral, [v.code for v in r.violations]) for r in records] == [
        (None, []),
        ("freeze", []),
        (None, ["unexpected_failure"]),
    ]


def test_a_freeze_that_came_after_the_child_had_written_everything_does_not_count() -> None:
    plan = make_plan("freeze", spec="token_delay=300ms", freeze_after=1, expect=FAIL)
    for times, done, applied in (
        ((1.0, 1.001, 1.002), True, False),  # the rest came in one burst: too late
        ((1.0, 1.3, 1.6), True, True),  # tokens kept coming after the stop
        ((1.0,), False, True),  # the stream was cut: the freeze bit
    ):
        freeze = Freeze(plan, None)  # no pid: record the times without a signal
        freeze.frozen_at = times[0]
        for t in times:
            freeze.on_event(Event(data="{}"), t)
        result = make_result() if done else make_result("error_event", error={"m": 1})
        assert freeze.applied(result) is applied, times
