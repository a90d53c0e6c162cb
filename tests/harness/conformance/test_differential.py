"""Differential mode: the same checks against two servers, the differences between them.

The fake llama-server against an identical fake differs nowhere; against a fake whose
streams break after two events (``error_after=2``) it differs exactly on the checks that
judge a generated answer, with both details, and allowed differences do not fail.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import pytest_twisted

from harness.conformance import (
    FAIL,
    NA,
    PASS,
    CheckDiff,
    DiffReport,
    TargetUnreachable,
    read_allow_file,
    run_differential,
)
from harness.fake_llama import FakeConfig, start_fake_server
from tests.harness.conformance.planted_dialects import planted_dialects
from tests.harness.conformance.support import (
    EXTERNAL_NA,
    FAKE_FAILS,
    free_port,
    reactor,
    run_child,
)
from tests.integration.stack import stack

# Checks that judge a stream's ending: every dialect's must differ under error_after=2.
ENDINGS = {
    "chat.stream.done_last",
    "responses.stream.completed_last",
    "messages.stream.stop_last",
    "native.stream.stop_last",
}
# Checks that generate nothing: a streaming fault cannot change them.
NO_GENERATION = {"models.shape", "native.tokenize_roundtrip", "native.health", "native.props"}


@asynccontextmanager
async def fakes(reference_faults: str) -> AsyncIterator[tuple[str, str]]:
    target = await start_fake_server(FakeConfig(alias="fake", parallel=4), reactor)
    reference = await start_fake_server(
        FakeConfig(alias="fake", parallel=4, faults=reference_faults), reactor
    )
    try:
        yield target.url, reference.url
    finally:
        await target.stop()
        await reference.stop()


def diff_text(diff: DiffReport) -> str:
    return "\n" + diff.format_table(width=160)


@pytest_twisted.ensureDeferred
async def test_identical_fakes_differ_nowhere() -> None:
    async with fakes("") as (target, reference):
        diff = await run_differential(target, reference, "fake", reactor=reactor)
    assert diff.diffs == [] and diff.ok, diff_text(diff)
    assert len(diff.target.results) == len(diff.reference.results) > 60
    # Equal results, not equal details: both fail the fake's known deviations alike.
    assert diff.target.failed and diff.format_table().startswith("0 unexpected and 0 allowed")


@pytest_twisted.ensureDeferred
async def test_a_faulty_reference_differs_on_every_stream_ending() -> None:
    async with fakes("error_after=2") as (target, reference):
        diff = await run_differential(target, reference, "fake", reactor=reactor)
    differing = {d.name for d in diff.diffs}
    assert ENDINGS <= differing, diff_text(diff)
    assert not differing & NO_GENERATION, diff_text(diff)
    assert not diff.ok and diff.unexpected == diff.diffs
    done_last = next(d for d in diff.diffs if d.name == "chat.stream.done_last")
    assert (done_last.target_result, done_last.reference_result) == (PASS, FAIL)
    assert "[DONE] is event" in done_last.target_detail
    assert "no [DONE]" in done_last.reference_detail
    table = diff.format_table()
    assert "DIFFERS  native.stream.stop_last" in table
    assert "  reference  fail" in table and "  target     pass" in table


@pytest_twisted.ensureDeferred
async def test_allowed_differences_do_not_fail_and_stale_ones_are_reported() -> None:
    only = ["chat.stream.done_last", "native.stream.stop_last", "native.health"]
    seen: list[tuple[int, int, str]] = []
    async with fakes("error_after=2") as (target, reference):
        diff = await run_differential(
            target,
            reference,
            "fake",
            reactor=reactor,
            only=only,
            allow=["chat.stream.done_last", "native.stream", "native.health"],
            progress=lambda done, total, res: seen.append((done, total, res.name)),
        )
    assert seen == [(i + 1, 6, name) for i, name in enumerate(only + only)]
    assert [d.name for d in diff.allowed] == ["chat.stream.done_last", "native.stream.stop_last"]
    assert diff.ok and diff.unexpected == []
    assert diff.stale_allowances == ["native.health"]
    assert "same     native.health  (allowed to differ, but did not)" in diff.format_table()
    data = json.loads(diff.to_json())
    assert data["summary"] == {"checks": 3, "differ": 2, "unexpected": 0, "allowed": 2}
    assert data["differences"][0]["reference"]["result"] == FAIL


@pytest_twisted.ensureDeferred
async def test_unknown_names_and_unreachable_servers_errback() -> None:
    async with fakes("") as (target, _):
        with pytest.raises(ValueError, match="unknown check name"):
            await run_differential(target, target, "fake", reactor=reactor, allow=["nope.x"])
        dead = f"http://127.0.0.1:{free_port()}"
        with pytest.raises(TargetUnreachable):
            await run_differential(target, dead, "fake", reactor=reactor, only=["models"])


def test_allow_file_takes_one_name_per_line_with_comments(tmp_path: Path) -> None:
    path = tmp_path / "allowed.txt"
    path.write_text(
        "# server_core fixes these llama-server deviations\n"
        "errors.invalid_json   500 upstream, 400 here\n"
        "\n"
        "  errors.unknown_model # 404 model_not_found\n"
    )
    assert read_allow_file(path) == ["errors.invalid_json", "errors.unknown_model"]


def test_check_diff_to_dict() -> None:
    d = CheckDiff("a.b", PASS, "ok", FAIL, "broken", allowed=False)
    assert d.to_dict() == {
        "name": "a.b",
        "allowed": False,
        "target": {"result": PASS, "detail": "ok"},
        "reference": {"result": FAIL, "detail": "broken"},
    }


# -- the command line ------------------------------------------------------------------------


def cli(*args: str) -> list[str]:
    return ["-m", "harness.cli", "conformance", *args]


@pytest_twisted.ensureDeferred
async def test_cli_differential_exit_codes(tmp_path: Path) -> None:
    only = ["--only", "responses,native.stream", "-q"]
    async with planted_dialects("ok") as good, planted_dialects("resp_after_completed") as bad:
        base = ["--target", good, "--reference", bad, "--model", "planted", *only]
        code, out, err = await run_child(cli(*base, "--json", str(tmp_path / "d.json")), tmp_path)
        assert code == 1, out + err
        assert "DIFFERS  responses.stream.completed_last" in out
        assert "1 unexpected and 0 allowed difference(s)" in out
        report = json.loads((tmp_path / "d.json").read_text())
        assert [d["name"] for d in report["differences"]] == ["responses.stream.completed_last"]
        allow = tmp_path / "allowed.txt"
        allow.write_text("responses.stream.completed_last  the reference appends an event\n")
        code, out, err = await run_child(cli(*base, "--allow-diff-file", str(allow)), tmp_path)
        assert code == 0, out + err
        assert "allowed  responses.stream.completed_last" in out
        code, out, err = await run_child(cli(*base, "--allow-diff", "responses.stream"), tmp_path)
        assert code == 0, out + err
        code, out, err = await run_child(cli(*base, "--allow-diff", "nope"), tmp_path)
        assert code == 2 and "unknown check name(s): nope" in err
        same = ["--target", good, "--reference", good, "--model", "planted", *only]
        code, out, err = await run_child(cli(*same), tmp_path)
        assert code == 0 and "0 unexpected and 0 allowed" in out, out + err


@pytest_twisted.ensureDeferred
async def test_server_core_differs_from_its_upstream_only_where_it_fixes_a_deviation() -> None:
    # server_core passes every check; the fake behind it fails llama-server's deviations.
    async with stack(server_yaml="  keepalive_interval: 0.01") as s:
        diff = await run_differential(s.url, s.fake.url, "fake", reactor=reactor)
        allowed = await run_differential(
            s.url, s.fake.url, "fake", reactor=reactor, allow=sorted(FAKE_FAILS)
        )
    assert {d.name for d in diff.diffs} == FAKE_FAILS, diff_text(diff)
    # What server_core cannot know of an external model is n/a there, a fail upstream.
    assert all(
        (d.target_result, d.reference_result) == (NA if d.name in EXTERNAL_NA else PASS, FAIL)
        for d in diff.diffs
    )
    assert allowed.ok and len(allowed.allowed) == len(FAKE_FAILS), diff_text(allowed)
