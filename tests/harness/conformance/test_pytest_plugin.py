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
