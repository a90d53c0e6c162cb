"""``harness conformance`` as a child process against in-process servers, and in process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from harness.cli import SUBCOMMANDS, main, register_subcommand
from harness.conformance import CHECKS
from tests.harness.conformance.support import (
    AUTH_CHECKS,
    EXTERNAL_NA,
    free_port,
    planted,
    run_child,
)
from tests.integration.stack import stack


def cli(*args: str) -> list[str]:
    return ["-m", "harness.cli", "conformance", *args]


@pytest_twisted.ensureDeferred
async def test_cli_exit_0_against_server_core_with_table_and_json(tmp_path: Path) -> None:
    out_file = tmp_path / "report.json"
    async with stack(server_yaml="  keepalive_interval: 0.01") as s:
        code, out, err = await run_child(
            cli("--target", s.url, "--model", "fake", "--json", str(out_file)), tmp_path
        )
    assert code == 0, out + err
    assert "chat.stream.role_first" in out and " pass " in out
    assert f"[ 1/{len(CHECKS)}] pass models.shape" in err  # progress on stderr
    report = json.loads(out_file.read_text())
    assert report["ok"] is True and report["strictness"] == "strict"
    assert report["summary"] == {
        "pass": len(CHECKS) - len(AUTH_CHECKS | EXTERNAL_NA),
        "fail": 0,
        "n/a": len(AUTH_CHECKS | EXTERNAL_NA),
        "total": len(CHECKS),
    }
    first = report["checks"][0]
    assert set(first) == {"name", "description", "result", "detail", "duration"}
    assert {c["name"] for c in report["checks"] if c["result"] == "n/a"} == (
        AUTH_CHECKS | EXTERNAL_NA
    )


@pytest_twisted.ensureDeferred
async def test_cli_exit_1_against_a_planted_violation(tmp_path: Path) -> None:
    out_file = tmp_path / "r.json"
    async with planted("nodone") as url:
        code, out, err = await run_child(
            cli(
                "--target",
                url,
                "--model",
                "planted",
                "--only",
                "chat.stream",
                "--json",
                str(out_file),
            ),
            tmp_path,
        )
    assert code == 1, out + err
    checks = {c["name"]: c for c in json.loads(out_file.read_text())["checks"]}
    assert checks["chat.stream.done_last"]["result"] == "fail"
    assert "no [DONE]" in checks["chat.stream.done_last"]["detail"]
    assert checks["chat.stream.role_first"]["result"] == "pass"
    assert all(name.startswith("chat.stream.") for name in checks)


@pytest_twisted.ensureDeferred
async def test_cli_exit_2_when_unreachable_or_misused(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = await run_child(cli("--target", url, "--model", "m"), tmp_path)
    assert (code, out) == (2, ""), err
    assert "target unreachable" in err
    code, _, err = await run_child(cli("--target", url, "--model", "m", "--only", "nope"), tmp_path)
    assert code == 2 and "unknown check name(s): nope" in err


def test_cli_usage_errors_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["conformance", "--target", "http://127.0.0.1:1"]) == 2
    assert "missing --model" in capsys.readouterr().err
    assert main(["conformance", "--target", "x", "--model", "m", "--timeout", "0"]) == 2
    assert main(["conformance", "--bogus"]) == 2
    assert (
        main(["conformance", "--target", "x", "--model", "m", "--json", "/no/such/d/r.json"]) == 2
    )
    assert "no such directory" in capsys.readouterr().err
    assert main(["conformance", "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == len(CHECKS) and listed[0].startswith("models.shape ")
    assert main(["--help"]) == 0
    assert "conformance" in capsys.readouterr().out


def test_cli_registry_accepts_another_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    def add_parser(subparsers: Any) -> Any:
        p = subparsers.add_parser("echo-test", help="test only")
        p.add_argument("--code", type=int, default=0)
        p.set_defaults(run=lambda args: print("ran") or args.code)
        return p

    register_subcommand("echo-test", add_parser)
    try:
        assert main(["echo-test", "--code", "7"]) == 7
        assert capsys.readouterr().out == "ran\n"
        assert main(["--help"]) == 0
        assert "echo-test" in capsys.readouterr().out
    finally:
        del SUBCOMMANDS["echo-test"]
