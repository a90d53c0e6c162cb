"""The pytest plugin, run as a child pytest against the in-process fake llama-server."""

from __future__ import annotations

from pathlib import Path

import pytest_twisted

from harness.fake_llama import FakeConfig, start_fake_server
from tests.harness.conformance.support import reactor, run_child

PLUGIN_TEST = """
def test_uses_the_report(conformance_report):
    assert conformance_report.result("models.shape").result == "pass"
    assert conformance_report.result("models.retrieve").result == "fail"
"""


@pytest_twisted.ensureDeferred
async def test_pytest_plugin_makes_one_item_per_check(tmp_path: Path) -> None:
    (tmp_path / "test_mine.py").write_text(PLUGIN_TEST)
    fake = await start_fake_server(FakeConfig(alias="fake"), reactor)
    try:
        code, out, err = await run_child(
            [
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-rA",
                "--conformance-target",
                fake.url,
                "--conformance-model",
                "fake",
                "--conformance-only",
                "models,auth",
            ],
            tmp_path,
        )
    finally:
        await fake.stop()
    assert code == 1, out + err  # models.retrieve fails against the fake
    assert "1 failed, 3 passed, 2 skipped" in out, out
    assert "PASSED conformance::models.shape" in out
    assert "FAILED conformance::models.retrieve" in out
    assert "models.retrieve failed: expected a 200 JSON body" in out
    assert "auth.missing_key n/a: no --api-key given" in out, out
    assert "PASSED test_mine.py::test_uses_the_report" in out


@pytest_twisted.ensureDeferred
async def test_pytest_plugin_differential_fails_only_differing_checks(tmp_path: Path) -> None:
    target = await start_fake_server(FakeConfig(alias="fake"), reactor)
    reference = await start_fake_server(FakeConfig(alias="fake", faults="error_after=2"), reactor)
    base = [
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-rA",
        "--conformance-target",
        target.url,
        "--conformance-reference",
        reference.url,
        "--conformance-model",
        "fake",
        "--conformance-only",
        "chat.stream.done_last,native.health,models.retrieve",
    ]
    try:
        code, out, err = await run_child(base, tmp_path)
        allowed = await run_child([*base, "--conformance-allow-diff", "chat.stream"], tmp_path)
        unknown = await run_child([*base, "--conformance-allow-diff", "nope"], tmp_path)
    finally:
        await target.stop()
        await reference.stop()
    assert code == 1, out + err
    # models.retrieve fails on both: no difference, so it passes here.
    assert "1 failed, 2 passed" in out, out
    assert "FAILED conformance::chat.stream.done_last" in out
    assert "chat.stream.done_last differs from the reference:" in out
    assert "  reference  fail: no [DONE]" in out
    assert "PASSED conformance::models.retrieve" in out
    assert allowed[0] == 0 and "3 passed" in allowed[1], allowed[1] + allowed[2]
    assert unknown[0] == 4 and "unknown check name(s): nope" in unknown[2], unknown
