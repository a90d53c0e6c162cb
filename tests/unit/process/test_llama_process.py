"""LlamaServerProcess without a child: the interface, the command line, logs, run-state files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from twisted.internet import task
from zope.interface.verify import verifyObject

from server_core.interfaces import IServerProcess
from server_core.process import LlamaServerProcess
from tests.unit.process.support import Rig, make_alias


def test_verify_interface(tmp_path: Path) -> None:
    assert verifyObject(IServerProcess, Rig(tmp_path).proc)


def test_argv_and_merged_flags(tmp_path: Path) -> None:
    proc = LlamaServerProcess(
        make_alias(params=["--ctx-size", "4096", "-ngl", "-1"]),
        "llama-server",
        ["-c", "2048", "--jinja", "--ctx_size=1024"],
        reactor=task.Clock(),
        state_dir=tmp_path,
    )
    assert proc.argv == [
        "llama-server",
        "--model",
        "/models/m.gguf",
        "--alias",
        "m",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--ctx-size",
        "4096",
        "--jinja",
        "-ngl",
        "-1",
    ]
    assert proc.state == "stopped" and proc.pid is None and proc.base_url is None


@pytest.mark.parametrize("flags", [["--port", "8080"], ["--host=0.0.0.0"], ["-m", "x.gguf"]])
def test_managed_flags_rejected(flags: list[str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sets --model, --alias, --host and --port itself"):
        LlamaServerProcess(make_alias(), "llama-server", flags, reactor=task.Clock())


def test_logs_kept_and_followed(tmp_path: Path) -> None:
    rig = Rig(tmp_path, log_lines=3)
    followed: list[str] = []
    rig.proc.add_log_listener(followed.append)

    def broken(line: str) -> None:
        raise RuntimeError(line)

    rig.proc.add_log_listener(broken)  # a broken listener changes nothing
    rig.proc.start()
    for i in range(5):
        rig.spawner.say(f"line {i}", fd=1 + i % 2)
    rig.spawner.protocols[-1].childDataReceived(2, b"no newline yet")
    rig.proc.remove_log_listener(followed.append)
    rig.spawner.exit(1)  # the partial line is flushed at the end
    assert followed == [f"line {i}" for i in range(5)]
    assert rig.proc.recent_logs() == ["line 3", "line 4", "no newline yet"]


def test_run_state_file_lifecycle(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.proc.start()
    (path,) = (tmp_path / "run").glob("*.json")
    record = json.loads(path.read_text())
    assert record["pid"] == record["pgid"] == 4_100_001
    assert record["owner_pid"] == os.getpid()
    assert record["argv"] == rig.proc.argv
    rig.spawner.exit(1)
    assert list((tmp_path / "run").glob("*.json")) == []
