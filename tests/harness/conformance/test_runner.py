"""Whole runs of the conformance suite against the fake llama-server, server_core, nothing.

- server_core (in front of the in-process fake) must pass every check.
- The fake imitates llama-server, which is not fully OpenAI-conformant: the checks it
  fails are pinned in ``FAKE_FAILS`` with the reason (docs/conformance.md lists them).
"""

from __future__ import annotations

import pytest
import pytest_twisted

from harness.conformance import CHECKS, FAIL, NA, PASS, TargetUnreachable, run_conformance
from harness.fake_llama import FakeConfig, start_fake_server
from tests.harness.conformance.support import (
    AUTH_CHECKS,
    EXTERNAL_NA,
    FAKE_FAILS,
    KEY,
    free_port,
    names,
    reactor,
    table,
)
from tests.integration.stack import stack

# -- the fake llama-server, directly ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_fake_llama_server_fails_only_its_known_deviations() -> None:
    fake = await start_fake_server(FakeConfig(alias="fake", parallel=4), reactor)
    seen: list[tuple[int, int, str]] = []
    try:
        report = await run_conformance(
            fake.url,
            "fake",
            reactor=reactor,
            progress=lambda done, total, res: seen.append((done, total, res.name)),
        )
    finally:
        await fake.stop()
    assert names(report, FAIL) == FAKE_FAILS, table(report)
    assert names(report, NA) == AUTH_CHECKS, table(report)
    assert len(report.passed) == len(CHECKS) - len(FAKE_FAILS) - len(AUTH_CHECKS)
    assert not report.ok
    # The reasons are in the details.
    assert "500" in report.result("errors.invalid_json").detail
    assert "status 200" in report.result("errors.unknown_model").detail
    # The fake's ping fault made comment frames, and the stream still completed.
    assert "comments, done" in report.result("chat.stream.keepalive_comments").detail
    assert [s[0] for s in seen] == list(range(1, len(CHECKS) + 1))
    assert {s[1] for s in seen} == {len(CHECKS)}


@pytest_twisted.ensureDeferred
async def test_fake_llama_server_with_api_key_passes_auth_checks() -> None:
    fake = await start_fake_server(FakeConfig(alias="fake", api_keys=(KEY,)), reactor)
    try:
        report = await run_conformance(
            fake.url, "fake", KEY, reactor, only=["auth", "models.shape", "chat.stream.done_last"]
        )
        wrong = await run_conformance(
            fake.url, "fake", "not-the-key", reactor, only=["models", "chat.nonstream.shape"]
        )
    finally:
        await fake.stop()
    assert names(report, PASS) == AUTH_CHECKS | {"models.shape", "chat.stream.done_last"}, table(
        report
    )
    # With a wrong key generation is refused (llama-server keeps /v1/models public).
    assert names(wrong, FAIL) == {"models.retrieve", "chat.nonstream.shape"}, table(wrong)
    assert "status=401" in wrong.result("chat.nonstream.shape").detail


# -- server_core in front of the fake --------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_server_core_passes_every_check() -> None:
    # A short keep-alive interval so the stream with slow tokens carries comments, and an
    # API key so the auth checks apply: nothing is n/a but what an external model cannot
    # tell (test_ollama_server_core.py passes those with a managed model).
    yaml = f"  keepalive_interval: 0.01\n  api_keys: [{KEY}]"
    async with stack(server_yaml=yaml) as s:
        report = await run_conformance(s.url + "/v1/", "fake", KEY, reactor)
    assert report.ok, table(report)
    assert names(report, NA) == EXTERNAL_NA, table(report)
    assert len(report.passed) == len(CHECKS) - len(EXTERNAL_NA), table(report)
    assert report.result("errors.unknown_model").detail.startswith("404")
    assert report.result("routes.method_not_allowed").detail.startswith("405")


@pytest_twisted.ensureDeferred
async def test_server_core_default_keepalive_makes_the_comment_check_not_applicable() -> None:
    # server_core drops the upstream's pings and sends its own only after 15 s of silence.
    async with stack() as s:
        report = await run_conformance(s.url, "fake", reactor=reactor, only=["chat.stream"])
    assert names(report, NA) == {"chat.stream.keepalive_comments"}, table(report)
    assert not report.failed, table(report)


@pytest_twisted.ensureDeferred
async def test_unreachable_target_errbacks() -> None:
    port = free_port()
    with pytest.raises(TargetUnreachable, match="no HTTP answer"):
        await run_conformance(f"http://127.0.0.1:{port}", "m", reactor=reactor)
    with pytest.raises(ValueError, match="unknown check"):
        await run_conformance(f"http://127.0.0.1:{port}", "m", reactor=reactor, only=["x.y"])
