"""Chaos in every dialect against the fake itself: the plans match what the fake streams,
honest faults leave no violation, the served set is probed, and a relay that forges
``response.completed`` over a lost Responses stream (or ``message_stop`` over an
Anthropic one) is caught and reproduced."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.server import Request

from harness.chaos import ChaosOptions, run_chaos
from harness.chaos.draw import generate_plans
from harness.chaos.kinds import DIALECT_NAMES, OLLAMA_DIALECTS
from harness.chaos.plan import PlanSettings
from harness.chaos.served import served_dialects
from harness.chaos.server_child import child_env
from harness.client import DONE, stream_request
from harness.fake_llama import FakeConfig, FakeServer, start_fake_server
from server_core.sse import Event, decode_all
from server_core.sse.dialects import Frame, dialect_for_path
from tests.harness.chaos.support import tables_add_up
from tests.harness.chaos.test_runner import BadProxy, bad_proxy

reactor: Any = _reactor
# The fake, like llama-server, has no Ollama API (server_core translates it).
FAKE_DIALECTS = tuple(d for d in DIALECT_NAMES if d not in OLLAMA_DIALECTS)

# Kinds the fake itself ends honestly (no relay is needed to make them honest; not
# error_after=N: with N the last event the fake writes the error after the ending).
HONEST_AT_THE_FAKE = "clean,ttft,token_delay,split_utf8,crlf,status,disconnect"


@pytest_twisted.async_yield_fixture()
async def fake() -> AsyncIterator[FakeServer]:
    server = await start_fake_server(FakeConfig(alias="m", parallel=32, seed=0), reactor)
    yield server
    await server.stop()


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_plans_expect_what_the_fake_streams_in_every_dialect(
    fake: FakeServer,
) -> None:
    for dialect in FAKE_DIALECTS:
        settings = PlanSettings(aliases=("m",), kinds=("clean",), dialects=(dialect,))
        for plan in generate_plans(replace(settings, stream_ratio=1.0), seed=8, n=6):
            r = await stream_request(fake.url + plan.endpoint, plan.body, timeout=10.0)
            stream_dialect = "chat" if dialect == "completions" else dialect
            assert r.outcome == DONE and r.dialect == stream_dialect, r.summary()
            # The event count the fault draws rely on, the text and the finish reason.
            assert (r.n_events, r.text) == (plan.n_events, plan.text), (dialect, r.summary())
            if dialect != "responses":
                assert r.finish_reason == plan.finish_reason, (dialect, r.summary())
            assert r.model == "m" and len(r.ids) == (0 if dialect == "native" else 1)


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_chaos_at_the_fake_in_every_dialect_has_no_violation(
    fake: FakeServer,
) -> None:
    kinds = tuple(HONEST_AT_THE_FAKE.split(","))
    opts = ChaosOptions(
        target=fake.url, model="m", requests=250, concurrency=8, seed=13, kinds=kinds
    )
    report = await run_chaos(opts, reactor, log=lambda line: None)
    data = report.to_json()
    assert report.options.dialects == FAKE_DIALECTS  # probed: all but Ollama's
    assert data["violations"] == [], report.format_text()
    tables_add_up(data)
    dialects = data["dialects"]
    assert set(dialects) == set(FAKE_DIALECTS)
    assert sum(row["requests"] for row in dialects.values()) == data["requests"]
    for name, row in dialects.items():
        assert row["outcomes"]["done"] > 10, (name, row)
        assert row["outcomes"]["http_error"] > 0 and row["outcomes"]["disconnected"] > 0, row
    assert "dialect" in report.format_text() and "messages" in report.format_text()


class _NoMessagesProxy(BadProxy):
    """A relay that has no Anthropic and no native route."""

    def render_POST(self, request: Request) -> Any:
        if request.path in (b"/v1/messages", b"/completion"):
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"application/json")
            return b'{"error":{"message":"Unknown route","type":"not_found_error"}}'
        return super().render_POST(request)


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_the_probe_leaves_out_the_dialects_a_target_does_not_serve() -> None:
    async with bad_proxy(_NoMessagesProxy) as url:
        assert await served_dialects(url, "m", reactor) == ("chat", "completions", "responses")
        opts = ChaosOptions(target=url, model="m", requests=20, seed=1, kinds=("clean",))
        report = await run_chaos(opts, reactor, log=lambda line: None)
        assert report.options.dialects == ("chat", "completions", "responses")
        assert set(report.to_json()["dialects"]) <= {"chat", "completions", "responses"}
        assert "--dialects" in report.options.reproduce_argv(0)


# -- a planted violation in the Responses (and the Anthropic) dialect -----------------

FORGED_COMPLETED = (
    b"event: response.completed\n"
    b'data: {"type":"response.completed","response":{"object":"response","status":"completed"}}'
    b"\n\n"
)
FORGED_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


class ForgedCompletedProxy(BadProxy):
    """Relays byte for byte; when a Responses stream ends without ``response.completed``
    (upstream reset, close, error event) it writes one and closes cleanly."""

    path = "/v1/responses"
    ending = b"response.completed"
    forged = FORGED_COMPLETED

    def forged_ending(self, path: str, seen: bytes) -> bytes | None:
        if path == self.path and self.ending not in seen:
            return self.forged  # THE BUG: a lost stream looks complete
        return None


class ForgedStopProxy(ForgedCompletedProxy):
    """The same bug in the Anthropic dialect: a forged ``message_stop``."""

    path = "/v1/messages"
    ending = b"message_stop"
    forged = FORGED_STOP


@pytest.mark.parametrize(
    ("proxy", "dialect"),
    [(ForgedCompletedProxy, "responses"), (ForgedStopProxy, "messages")],
)
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_forged_complete_ending_is_caught_and_reproduced(
    tmp_path: Path, proxy: type[ForgedCompletedProxy], dialect: str
) -> None:
    async with bad_proxy(proxy) as url:
        opts = ChaosOptions(
            target=url,
            model="m",
            requests=40,
            concurrency=8,
            seed=5,
            kinds=("clean", "close", "reset", "error"),
            dialects=(dialect,),
        )
        report = await run_chaos(opts, reactor, log=lambda line: None)
        assert report.exit_code == 1
        data = report.to_json()
        assert set(data["dialects"]) == {dialect}
        forged = ("done_despite_fault", "done_incomplete", "done_after_error")
        found = [v for v in data["violations"] if v["code"] in forged]
        assert found, data["violation_counts"]
        # The clean requests are not blamed: only the cut ones forged their ending.
        assert all(v["kind"] != "clean" for v in data["violations"]), data["violations"]
        v = next(v for v in found if "p=" not in v["spec"])
        assert proxy.ending.decode() in v["detail"], v
        out_json = tmp_path / "again.json"
        argv = [*v["reproduce_argv"], "--json", str(out_json)]
        assert "--dialects" in argv and argv[argv.index("--dialects") + 1] == dialect
        out, err, code = await getProcessOutputAndValue(
            argv[0], argv[1:], env=child_env(), reactor=reactor
        )
        assert code == 1, (out + err).decode(errors="replace")[-2000:]
        again = json.loads(out_json.read_text())
        assert again["requests"] == 1 and again["only_request"] == v["index"]
        assert [(w["index"], w["code"]) for w in again["violations"]] == [
            (w["index"], w["code"]) for w in data["violations"] if w["index"] == v["index"]
        ]


class HonestEndingProxy(BadProxy):
    """The fix of the proxies above: a Responses or Anthropic stream lost before its
    complete ending ends with the dialect's one error event."""

    def forged_ending(self, path: str, seen: bytes) -> bytes | None:
        dialect = dialect_for_path(path)
        if dialect is None or dialect.completes_with_marker:
            return None
        last = next((e for e in reversed(decode_all(seen)) if isinstance(e, Event)), None)
        if last is not None and dialect.read(last)[0] is Frame.COMPLETE:
            return None
        return dialect.error_frame("upstream lost")


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_the_honest_ending_of_a_lost_stream_passes_in_every_new_dialect() -> None:
    async with bad_proxy(HonestEndingProxy) as url:
        opts = ChaosOptions(
            target=url,
            model="m",
            requests=60,
            concurrency=8,
            seed=5,
            stream_ratio=1.0,  # a cut JSON body cannot be made honest by a relay this small
            # Not error_after: at the last event the fake writes its error after the
            # ending, which a byte-for-byte relay passes on (server_core drops it).
            kinds=("clean", "close", "reset", "drop"),
            dialects=("responses", "messages"),
        )
        report = await run_chaos(opts, reactor, log=lambda line: None)
        data = report.to_json()
        assert data["violations"] == [], report.format_text()
        for row in data["dialects"].values():
            assert row["outcomes"]["error_event"] > 3 and row["outcomes"]["done"] > 3, row
