"""Run-state files and the parts of reap_orphans that need no other process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from server_core.process.orphans import (
    _cmdline_matches,
    default_state_dir,
    reap_orphans,
    remove_run_state,
    write_run_state,
)
from server_core.process.procfs import proc_stat


def test_default_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_state_dir() == str(tmp_path / "server-core")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_state_dir() == str(tmp_path / ".cache" / "server-core" / "run")


def test_write_and_remove_a_run_state_file(tmp_path: Path) -> None:
    pid = os.getpid()  # any live pid: the record is only read back here
    path = write_run_state(str(tmp_path / "run"), "my model/1", pid, ["llama-server", "-c", "8"])
    assert path == str(tmp_path / "run" / f"my_model_1-{pid}.json")
    record = json.loads(Path(path).read_text())
    st = proc_stat(pid)
    assert st is not None
    assert record["pid"] == record["pgid"] == record["owner_pid"] == pid
    assert record["owner_start"] == record["child_start"] == st.starttime
    assert record["argv"] == ["llama-server", "-c", "8"] and record["alias"] == "my model/1"
    assert list((tmp_path / "run").iterdir()) == [Path(path)]  # no temporary file left
    remove_run_state(path)
    remove_run_state(path)  # already gone: fine
    remove_run_state(None)
    assert list((tmp_path / "run").iterdir()) == []


def test_an_unwritable_state_dir_records_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert write_run_state(str(blocker / "run"), "m", os.getpid(), ["llama-server"]) is None


@pytest.mark.parametrize(
    ("cmdline", "argv", "matches"),
    [
        (["llama-server", "-m", "a.gguf"], ["llama-server", "-m", "a.gguf"], True),
        (["/opt/bin/llama-server", "-m", "a"], ["/usr/bin/llama-server", "-m", "a"], True),
        (["python3", "/x/llama-server", "-m", "a"], ["llama-server", "-m", "a"], True),
        (
            ["python", "-I", "-S", "-c", "W", "1", "llama-server", "-m", "a"],
            ["llama-server", "-m", "a"],
            True,
        ),
        (["llama-server", "-m", "b.gguf"], ["llama-server", "-m", "a.gguf"], False),
        (["sleep", "-m", "a"], ["llama-server", "-m", "a"], False),
        (["llama-server"], ["llama-server", "-m", "a"], False),
        (["llama-server"], [], False),
    ],
)
def test_cmdline_matches(cmdline: list[str], argv: list[str], matches: bool) -> None:
    assert _cmdline_matches(cmdline, argv) is matches


def test_reap_leaves_a_live_owners_files_and_removes_junk_and_stale_ones(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ours = write_run_state(str(run), "ours", os.getpid(), ["llama-server"])
    assert ours is not None
    (run / "junk.json").write_text("{not json")
    stale = run / "gone-1.json"
    # owner and leader both long gone (pid 0 never runs): removed, nothing signalled
    stale.write_text(json.dumps({"owner_pid": 0, "pid": 0, "argv": ["llama-server"]}))
    assert reap_orphans(run, grace=0.1) == []
    assert Path(ours).exists()
    assert not (run / "junk.json").exists() and not stale.exists()
    assert reap_orphans(tmp_path / "missing") == []
