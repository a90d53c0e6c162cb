"""The command line: ``python -m harness.chaos`` end to end (the soak), --list-kinds."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from harness.chaos import KINDS, VIOLATION_CODES, main
from harness.chaos.server_child import child_env
from tests.harness.chaos.support import tables_add_up


def test_list_kinds_names_every_kind_and_violation_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list-kinds"]) == 0
    out = capsys.readouterr().out
    assert all(kind in out for kind in KINDS)
    assert all(code in out for code in VIOLATION_CODES)


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
    out, err, code = await getProcessOutputAndValue(
        argv[0], argv[1:], env=child_env(), reactor=reactor
    )
    text = (out + err).decode(errors="replace")
    assert code == 0, text[-4000:]
    data = json.loads(out_json.read_text())
    assert data["ok"] and data["requests"] == int(n)
    tables_add_up(data)
    assert "OK: no violation" in text
