"""The chaos runner: plans, the judge, a spawn-mode run, a planted violation, a soak."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import HTTPConnectionPool
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from harness import chaos
from harness.chaos import ChaosOptions, RequestRecord, attribute_collateral, run_chaos
from harness.chaos_judge import judge
from harness.chaos_plan import (
    CHAT,
    COMPLETIONS,
    EITHER,
    FAIL,
    KINDS,
    MANAGED,
    NET_KINDS,
    SUCCEED,
    PlanSettings,
    RequestPlan,
    generate_plan,
    generate_plans,
    stream_events,
)
from harness.chaos_stack import source_root
from harness.client import StreamResult
from harness.fake_llama import FakeConfig, start_fake_server

SPAWN_SETTINGS = PlanSettings(
    aliases=("chaos-a", "chaos-b"),
    managed_alias="chaos-managed",
    lanes=3,
    idle_timeout=1.5,
    header_timeout=2.5,
)


# -- plans ----------------------------------------------------------------------------


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
    assert {p.endpoint for p in plans} == {CHAT, COMPLETIONS}
    assert {p.stream for p in plans} == {True, False}


def test_target_mode_leaves_out_what_it_cannot_end_or_reach() -> None:
    target = PlanSettings(aliases=("m",))
    kinds = set(target.enabled_kinds())
    assert not kinds & ({"stall", "hang", "crash"} | NET_KINDS)
    assert {"reset", "close", "error", "legacy_error", "disconnect"} <= kinds
    with_timeouts = replace(target, idle_timeout=2.0, header_timeout=3.0)
    assert {"stall", "hang"} <= set(with_timeouts.enabled_kinds())


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
        assert p.skippable == ("p=0.5" in p.spec)


# -- the judge ------------------------------------------------------------------------


def _plan(kind: str = "clean", **kw: Any) -> RequestPlan:
    tokens = (" river", " café", " 日本")
    base: dict[str, Any] = dict(
        index=7,
        kind=kind,
        route="direct",
        alias="m",
        endpoint=CHAT,
        body={"model": "m", "stream": True},
        spec="",
        toxic=None,
        disconnect_after=None,
        expect=SUCCEED,
        skippable=False,
        tokens=tokens,
        finish_reason="stop",
        alt_text=None,
        n_events=6,
        delay=0.0,
        deadline=5.0,
    )
    base.update(kw)
    return RequestPlan(**base)


def _result(outcome: str = "done", **kw: Any) -> StreamResult:
    base: dict[str, Any] = dict(
        outcome=outcome,
        status=200,
        headers={"content-type": ["text/event-stream"]},
        text=" river café 日本",
        finish_reason="stop",
        model="m",
        ids={"chatcmpl-1"},
        t_start=0.0,
        t_end=0.5,
    )
    base.update(kw)
    return StreamResult(**base)


def codes(plan: RequestPlan, result: StreamResult, model: str | None = "m") -> list[str]:
    return [v.code for v in judge(plan, result, expected_model=model)]


def test_judge_honest_endings() -> None:
    assert codes(_plan(), _result()) == []
    fail = _plan("reset", spec="reset_after=3", expect=FAIL)
    assert codes(fail, _result("error_event", text=" river", error={"message": "x"})) == []
    http = _result("http_error", status=502, headers={}, error={"message": "x"}, text="")
    assert codes(fail, http) == []
    leave = _plan("disconnect", disconnect_after=2)
    assert codes(leave, _result("disconnected", text=" river")) == []
    assert codes(leave, _result()) == []  # the stream ended before the client left


def test_judge_a_cut_stream_that_looks_complete() -> None:
    # The planted bug: [DONE] after a prefix of the text.
    assert codes(_plan(), _result(text=" river")) == ["done_incomplete"]
    fail = _plan("close", spec="close_after=3", expect=FAIL)
    assert codes(fail, _result(text=" river")) == ["done_despite_fault"]
    assert codes(fail, _result()) == ["done_despite_fault"]
    # p<1: the fake may have skipped the fault; then only the whole text is honest.
    maybe = replace(fail, spec="close_after=3,p=0.5", skippable=True)
    assert codes(maybe, _result()) == []
    assert codes(maybe, _result(text=" river")) == ["done_despite_fault"]
    assert codes(_plan(), _result(text=" other words")) == ["wrong_text"]
    assert codes(_plan(), _result(finish_reason=None)) == ["wrong_finish"]


def test_judge_duplicated_event_relayed_as_is_is_honest() -> None:
    dup = _plan("duplicate", spec="duplicate_after=3", alt_text=" river café café 日本")
    assert codes(dup, _result(text=" river café café 日本")) == []
    assert codes(dup, _result()) == []  # a relay that drops the duplicate
    assert codes(dup, _result(text=" river river café 日本")) == ["wrong_text"]


def test_judge_never_after_done_or_error() -> None:
    fail = _plan("legacy_error", spec="legacy_error_after=2", expect=FAIL)
    legacy = _result("error_event", error={"message": "x"}, done_after_error=True)
    assert codes(fail, legacy) == ["done_after_error"]
    assert codes(_plan(), _result(after_done=True)) == ["after_done"]
    err = _result("error_event", error={"message": "x"}, after_error=True)
    assert codes(fail, err) == ["after_error"]
    assert codes(_plan(), _result(invalid_json=1)) == ["invalid_json"]


def test_judge_dishonest_or_broken_endings() -> None:
    assert codes(_plan(), _result("truncated", end_reason="closed")) == ["truncated"]
    assert codes(_plan(), _result("timeout", end_reason="timeout")) == ["timeout"]
    assert codes(_plan(), _result("connect_error", status=None)) == ["connect_error"]
    assert codes(_plan(), _result("disconnected")) == ["unexpected_disconnect"]
    html = _result("http_error", status=500, headers={"content-type": ["text/html"]})
    assert codes(_plan(expect=FAIL), html) == ["bad_error_body"]
    json_200 = _result("error_event", headers={"content-type": ["application/json"]})
    assert codes(_plan(expect=FAIL), replace(json_200, error={"message": "x"})) == ["error_in_200"]
    failed = _result("http_error", status=502, headers={}, error={"message": "gone"})
    assert codes(_plan(), failed) == ["unexpected_failure"]


def test_judge_model_ids_and_deadline() -> None:
    assert codes(_plan(), _result(model="other")) == ["wrong_model"]
    assert codes(_plan(), _result(model="other"), model=None) == []
    assert codes(_plan(), _result(ids={"a", "b"})) == ["multiple_ids"]
    assert codes(_plan(deadline=0.4), _result(t_end=0.5)) == ["late"]
    assert codes(_plan(deadline=0.6), _result(t_end=0.5)) == []


def _record(plan: RequestPlan, result: StreamResult, t0: float, t1: float) -> RequestRecord:
    rec = RequestRecord(plan, plan.alias or "lane", "m", result, t0, t1)
    rec.violations = judge(plan, result, expected_model="m", deadline=100)
    return rec


def test_collateral_of_a_crash_and_of_a_pool_race() -> None:
    failed = _result("http_error", status=502, headers={}, error={"message": "gone"})
    crash = _plan("crash", route=MANAGED, alias="cm", expect=FAIL, kills_process=True)
    victim = _plan(route=MANAGED, alias="cm", index=8)
    far = _plan(route=MANAGED, alias="cm", index=9)
    closer = _plan("close", alias="a", index=10, closes_connection=True)
    raced = _plan(alias="a", index=11)
    lonely = _plan(alias="b", index=12)
    records = [
        _record(crash, _result("error_event", error={"message": "x"}), 1.0, 1.2),
        _record(victim, failed, 1.1, 1.3),
        _record(far, failed, 9.0, 9.1),
        _record(closer, _result(), 3.0, 3.1),
        _record(raced, failed, 3.12, 3.13),
        _record(lonely, failed, 3.12, 3.13),
    ]
    attribute_collateral(records)
    assert [(r.collateral, [v.code for v in r.violations]) for r in records] == [
        (None, []),
        ("crash", []),
        (None, ["unexpected_failure"]),
        (None, []),
        ("pool_race", []),
        (None, ["unexpected_failure"]),
    ]
    assert records[4].collateral_of == [10]
    strict = [_record(closer, _result(), 3.0, 3.1), _record(raced, failed, 3.12, 3.13)]
    attribute_collateral(strict, strict=True)
    assert [v.code for v in strict[1].violations] == ["unexpected_failure"]


def test_options_reproduce_command_round_trips() -> None:
    parser = argparse.ArgumentParser()
    chaos.add_arguments(parser)
    args = parser.parse_args(
        ["--target", "http://h:1", "--model", "m", "--seed", "4", "--exclude-kinds", "clean"]
    )
    opts = ChaosOptions.from_args(args)
    argv = opts.reproduce_argv(17)
    assert argv[:3] == [sys.executable, "-m", "harness.chaos"]
    again = ChaosOptions.from_args(parser.parse_args(argv[3:]))
    assert again.only_request == 17
    assert again.plan_settings().enabled_kinds() == opts.plan_settings().enabled_kinds()
    assert replace(again.plan_settings(), kinds=()) == replace(opts.plan_settings(), kinds=())
    assert generate_plan(again.plan_settings(), again.seed, 17) == generate_plan(
        opts.plan_settings(), 4, 17
    )
    with pytest.raises(ValueError, match="unknown fault kind"):
        ChaosOptions.from_args(parser.parse_args(["--kinds", "nope"]))


# -- a planted violation: a proxy that finishes every stream with [DONE] --------------


class BadProxy(Resource):
    """A broken stand-in for server_core: relays a fake's responses byte for byte, but
    when the upstream stream ends without ``[DONE]`` (reset, close, error event) it
    finishes the stream cleanly with ``data: [DONE]``."""

    isLeaf = True

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return b'{"status":"ok"}'

    def render_POST(self, request: Request) -> Any:
        headers = {"Content-Type": "application/json"}
        fault = request.getHeader(b"x-fault")
        if fault is not None:
            headers["X-Fault"] = fault.decode()
        assert request.content is not None
        d = treq.post(
            self.upstream + request.path.decode(),
            request.content.read(),
            headers=headers,
            pool=self.pool,
            unbuffered=True,
        )
        d.addCallback(self._relay, request)
        d.addErrback(self._no_response, request)
        request.notifyFinish().addErrback(lambda _: d.cancel())
        return NOT_DONE_YET

    def _no_response(self, _: Any, request: Request) -> None:
        if not request.finished and not request._disconnected:
            request.setResponseCode(502)
            request.setHeader(b"content-type", b"application/json")
            request.write(b'{"error":{"message":"upstream failed","type":"server_error"}}')
            request.finish()

    def _relay(self, response: IResponse, request: Request) -> defer.Deferred[None]:
        request.setResponseCode(response.code)
        for name in (b"content-type",):
            for value in response.headers.getRawHeaders(name, []):
                request.setHeader(name, value)
        seen = bytearray()

        def write(data: bytes) -> None:
            seen.extend(data)
            if not request._disconnected:
                request.write(data)

        def end(_: Any) -> None:
            if request._disconnected or request.finished:
                return
            if (
                b"text/event-stream"
                in (request.responseHeaders.getRawHeaders(b"content-type", [b""])[0])
                and b"[DONE]" not in seen
            ):
                request.write(b"data: [DONE]\n\n")  # THE BUG: a cut stream looks complete
            request.finish()

        return treq.collect(response, write).addBoth(end)


@asynccontextmanager
async def bad_proxy() -> AsyncIterator[str]:
    fake = await start_fake_server(FakeConfig(alias="m", parallel=32, seed=0), reactor)
    port = reactor.listenTCP(0, Site(BadProxy(fake.url)), interface="127.0.0.1")
    try:
        yield f"http://127.0.0.1:{port.getHost().port}"
    finally:
        await port.stopListening()
        await fake.stop()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = source_root()
    if root:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_planted_violation_is_caught_and_reproduced_from_its_seed(tmp_path: Path) -> None:
    async with bad_proxy() as url:
        opts = ChaosOptions(target=url, model="m", requests=60, concurrency=8, seed=21)
        report = await run_chaos(opts, reactor, log=lambda line: None)
        assert report.exit_code == 1
        data = report.to_json()
        found = [
            v
            for v in data["violations"]
            if v["code"] in ("done_despite_fault", "done_incomplete", "done_after_error")
        ]
        assert found, data["violation_counts"]
        # A violation whose fault is certain (no p=) must come back on its own.
        v = next(v for v in found if "p=" not in v["spec"])
        assert "--only-request" in v["reproduce"] and f"--seed {opts.seed}" in v["reproduce"]
        out_json = tmp_path / "again.json"
        argv = [*v["reproduce_argv"], "--json", str(out_json)]
        out, err, code = await getProcessOutputAndValue(
            argv[0], argv[1:], env=_env(), reactor=reactor
        )
        assert code == 1, (out + err).decode(errors="replace")[-2000:]
        again = json.loads(out_json.read_text())
        assert again["requests"] == 1 and again["only_request"] == v["index"]
        assert [(w["index"], w["code"]) for w in again["violations"]] == [
            (w["index"], w["code"]) for w in data["violations"] if w["index"] == v["index"]
        ]
        assert b"reproduce:" in out


# -- spawn mode -----------------------------------------------------------------------


def _tables_add_up(data: dict[str, Any]) -> None:
    kinds = data["kinds"]
    assert sum(row["requests"] for row in kinds.values()) == data["requests"]
    for kind, row in kinds.items():
        assert sum(row["outcomes"].values()) == row["requests"], kind
    for outcome, n in data["outcomes"].items():
        assert sum(row["outcomes"][outcome] for row in kinds.values()) == n
    assert sum(row["violations"] for row in kinds.values()) == len(data["violations"])
    assert len(data["records"]) == data["requests"]


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_spawn_mode_run_has_no_violation() -> None:
    opts = ChaosOptions(
        requests=300,
        concurrency=16,
        seed=3,
        idle_timeout=1.0,
        header_timeout=1.5,
        delay_scale=0.5,
    )
    lines: list[str] = []
    report = await run_chaos(opts, reactor, log=lines.append)
    data = report.to_json()
    assert report.setup_error is None, report.setup_error
    assert data["violations"] == [], report.format_text()
    assert all(c["ok"] for c in data["checks"]), report.format_text()
    assert {c["name"] for c in data["checks"]} == {
        "upstream_slots",
        "health",
        "fds",
        "rss",
        "stop",
        "children",
    }
    _tables_add_up(data)
    # The faults really bit: honest failures of every flavour were seen.
    assert data["outcomes"]["done"] > 100
    assert data["outcomes"]["http_error"] > 10 and data["outcomes"]["error_event"] > 10
    assert data["outcomes"]["disconnected"] > 0
    assert data["kinds"]["reset"]["outcomes"]["done"] < data["kinds"]["reset"]["requests"]
    assert any("300/300 requests" in line for line in lines)


@pytest.mark.timeout(300)
@pytest_twisted.ensureDeferred
async def test_soak(tmp_path: Path) -> None:
    """The tox soak: ``harness chaos --spawn`` as a command, 2000 requests at 32."""
    n = os.environ.get("CHAOS_SOAK_REQUESTS", "2000")
    out_json = tmp_path / "soak.json"
    argv = [
        sys.executable,
        "-m",
        "harness.chaos",
        "--spawn",
        "--requests",
        n,
        "--concurrency",
        "32",
        "--seed",
        os.environ.get("CHAOS_SOAK_SEED", "2024"),
        "--json",
        str(out_json),
        "--progress",
        "500",
    ]
    out, err, code = await getProcessOutputAndValue(argv[0], argv[1:], env=_env(), reactor=reactor)
    text = (out + err).decode(errors="replace")
    assert code == 0, text[-4000:]
    data = json.loads(out_json.read_text())
    assert data["ok"] and data["requests"] == int(n)
    _tables_add_up(data)
    assert "OK: no violation" in text
