"""Chaos in Ollama's dialects against server_core (the fake has no Ollama API): the plans
expect what server_core answers, the upstream event counts decide the ending, a relay
that forges ``"done": true`` over a lost stream is caught and reproduced, and a spawn
run over the Ollama routes has no violation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.server import Site

from harness.chaos import ChaosOptions, run_chaos
from harness.chaos.draw import generate_plans
from harness.chaos.kinds import OLLAMA_DIALECTS
from harness.chaos.plan import PlanSettings
from harness.chaos.server_child import child_env
from harness.client import DONE, ERROR_EVENT, stream_request
from tests.harness.chaos.support import tables_add_up
from tests.harness.chaos.test_runner import BadProxy
from tests.integration.stack import Stack, stack

reactor: Any = _reactor


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_plans_expect_what_server_core_answers_in_the_ollama_dialects() -> None:
    async with stack() as s:
        for dialect in OLLAMA_DIALECTS:
            settings = PlanSettings(aliases=("fake",), kinds=("clean",), dialects=(dialect,))
            for plan in generate_plans(replace(settings, stream_ratio=0.5), seed=8, n=8):
                r = await stream_request(s.url + plan.endpoint, plan.body, timeout=10.0)
                assert r.outcome == DONE and r.dialect == "ollama", r.summary()
                assert (r.text, r.finish_reason) == (plan.text, plan.finish_reason), plan
                assert r.model == "fake" and r.timings["eval_count"] == len(plan.tokens)
                # A line per token and the done line; the plan counts upstream events.
                want = len(plan.tokens) + 1 if plan.stream else 0
                assert (r.n_events, r.is_ndjson) == (want, plan.stream), r.summary()


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_the_upstream_event_count_decides_the_ending() -> None:
    settings = PlanSettings(aliases=("fake",), kinds=("clean",), dialects=OLLAMA_DIALECTS)
    plans = [p for p in generate_plans(settings, seed=4, n=12) if p.stream][:4]
    assert {p.dialect for p in plans} == set(OLLAMA_DIALECTS)
    async with stack() as s:
        for plan in plans:
            url, body = s.url + plan.endpoint, plan.body
            # Every token and the finish arrived, [DONE] did not: one error line.
            spec = f"close_after={plan.n_events - 1}"
            cut = await stream_request(url, body, headers={"X-Fault": spec})
            assert (cut.outcome, cut.text) == (ERROR_EVENT, plan.text), cut.summary()
            assert not (cut.after_error or cut.done_after_error or cut.invalid_json)
            spec = f"close_after={plan.n_events}"
            whole = await stream_request(url, body, headers={"X-Fault": spec})
            assert (whole.outcome, whole.text) == (DONE, plan.text), whole.summary()


# -- a planted violation: a relay that forges "done": true over a lost stream ----------


class ForgedDoneProxy(BadProxy):
    """In front of server_core: relays byte for byte, but drops the one error line
    server_core writes after an upstream loss and ends the NDJSON stream with a
    ``"done": true`` line of its own. THE BUG: a cut stream looks complete."""

    def relay_filter(self, content_type: bytes) -> Callable[[bytes], bytes]:
        if b"application/x-ndjson" not in content_type:
            return super().relay_filter(content_type)
        partial = bytearray()

        def passed(data: bytes) -> bytes:
            partial.extend(data)
            *lines, rest = bytes(partial).split(b"\n")
            partial[:] = rest
            return b"".join(line + b"\n" for line in lines if not line.startswith(b'{"error"'))

        return passed

    def forged_ending(self, path: str, seen: bytes) -> bytes | None:
        if b'"done":true' in seen.replace(b" ", b""):
            return None
        done = {"message": {"role": "assistant", "content": ""}, "response": ""}
        return json.dumps({**done, "done": True, "done_reason": "stop"}).encode() + b"\n"


class PassingProxy(BadProxy):
    """The same relay without the bug: server_core's endings pass as they are."""

    def forged_ending(self, path: str, seen: bytes) -> bytes | None:
        return None


@asynccontextmanager
async def forged_in_front_of(
    s: Stack, proxy: type[BadProxy] = ForgedDoneProxy
) -> AsyncIterator[str]:
    port = reactor.listenTCP(0, Site(proxy(s.url)), interface="127.0.0.1")
    try:
        yield f"http://127.0.0.1:{port.getHost().port}"
    finally:
        await port.stopListening()


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_a_forged_done_line_is_caught_and_reproduced(tmp_path: Path) -> None:
    async with stack() as s, forged_in_front_of(s) as url:
        opts = ChaosOptions(
            target=url,
            model="fake",
            requests=40,
            concurrency=4,
            seed=5,
            stream_ratio=1.0,
            kinds=("clean", "close", "reset", "error"),
            dialects=OLLAMA_DIALECTS,
        )
        report = await run_chaos(opts, reactor, log=lambda line: None)
        assert report.exit_code == 1
        data = report.to_json()
        forged = ("done_despite_fault", "done_incomplete")
        found = [v for v in data["violations"] if v["code"] in forged]
        assert {v["dialect"] for v in found} == set(OLLAMA_DIALECTS), data["violations"]
        # The clean requests are not blamed: only the cut ones forged their ending.
        assert all(v["kind"] != "clean" for v in data["violations"]), data["violations"]
        v = next(v for v in found if "p=" not in v["spec"])
        assert '"done": true' in v["detail"], v
        out_json = tmp_path / "again.json"
        argv = [*v["reproduce_argv"], "--json", str(out_json)]
        out, err, code = await getProcessOutputAndValue(
            argv[0], argv[1:], env=child_env(), reactor=reactor
        )
        assert code == 1, (out + err).decode(errors="replace")[-2000:]
    again = json.loads(out_json.read_text())
    assert again["requests"] == 1 and again["only_request"] == v["index"]
    assert [(w["index"], w["code"]) for w in again["violations"]] == [
        (w["index"], w["code"]) for w in data["violations"] if w["index"] == v["index"]
    ]


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_the_same_faults_through_an_honest_relay_have_no_violation() -> None:
    async with stack() as s, forged_in_front_of(s, PassingProxy) as url:
        opts = ChaosOptions(
            target=url,
            model="fake",
            requests=40,
            concurrency=4,
            seed=5,
            stream_ratio=1.0,
            kinds=("clean", "close", "reset", "error"),
            dialects=OLLAMA_DIALECTS,
        )
        report = await run_chaos(opts, reactor, log=lambda line: None)
    data = report.to_json()
    assert data["violations"] == [], report.format_text()
    for name in OLLAMA_DIALECTS:
        row = data["dialects"][name]
        assert row["outcomes"]["error_event"] > 3 and row["outcomes"]["done"] > 3, row


# -- spawn mode over the Ollama routes -----------------------------------------------------


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_spawn_run_over_the_ollama_routes_has_no_violation() -> None:
    opts = ChaosOptions(
        requests=300,
        concurrency=16,
        seed=11,
        idle_timeout=1.0,
        header_timeout=1.5,
        delay_scale=0.5,
        dialects=OLLAMA_DIALECTS,
    )
    report = await run_chaos(opts, reactor, log=lambda line: None)
    data = report.to_json()
    assert report.setup_error is None, report.setup_error
    assert data["violations"] == [], report.format_text()
    assert all(c["ok"] for c in data["checks"]), report.format_text()
    tables_add_up(data)
    # Only freeze requests (always chat) and embeddings speak another dialect.
    others = {d: row["requests"] for d, row in data["dialects"].items() if row["requests"]}
    assert set(others) - set(OLLAMA_DIALECTS) <= {"chat", "embeddings"}, others
    assert others.get("chat", 0) == data["kinds"].get("freeze", {}).get("requests", 0)
    for name in OLLAMA_DIALECTS:
        row = data["dialects"][name]
        assert row["requests"] > 80 and row["outcomes"]["done"] > 30, (name, row)
        assert row["outcomes"]["error_event"] > 5 and row["outcomes"]["http_error"] > 5, row


# -- a server_core bug the ping kind found (fixed in e306b2a) -------------------------------


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_pings_after_the_role_chunk_do_not_hold_a_stalled_ollama_stream_open() -> None:
    # The chaos soak's request #586 (seed 2024): ping | ollama_chat | stall_after=1,ping=200ms.
    # The role chunk is an upstream event that makes no line; pings after it are no life.
    yaml = "  upstream:\n    idle_timeout: 0.5"
    async with stack(server_yaml=yaml) as s:
        r = await stream_request(
            s.url + "/api/chat",
            {"model": "fake", "messages": [{"role": "user", "content": "hi"}]},
            headers={"X-Fault": "stall_after=1,ping=100ms"},
            timeout=5.0,
        )
    # Nothing was written yet: the idle timeout must end it with an HTTP error.
    assert r.outcome == "http_error" and r.duration is not None and r.duration < 3, r.summary()
