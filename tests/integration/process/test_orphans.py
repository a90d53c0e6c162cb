"""reap_orphans against real processes: orphans, a stubborn one, strangers, our own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server_core.process import reap_orphans
from server_core.process.procfs import proc_stat

pytestmark = pytest.mark.timeout(30)


def _sleeper(*extra: str, ignore_term: bool = False) -> subprocess.Popen[str]:
    code = "import signal, sys, time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('up', flush=True)\ntime.sleep(30)\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *extra],
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "up\n"
    return proc


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _record(directory: Path, name: str, pid: int, argv: list[str], owner: int) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / f"{name}-{pid}.json"
    st = proc_stat(pid)
    path.write_text(
        json.dumps(
            {
                "pid": pid,
                "pgid": pid,
                "owner_pid": owner,
                "owner_start": None,
                "child_start": st[2] if st else None,
                "argv": argv,
            }
        )
    )
    return path


def test_reap_orphans(tmp_path: Path) -> None:
    run = tmp_path / "run"
    dead_owner = _dead_pid()
    orphan = _sleeper("--model", "orphan.gguf")
    stubborn = _sleeper("--model", "stubborn.gguf", ignore_term=True)
    stranger = _sleeper("--model", "stranger.gguf")
    ours = _sleeper("--model", "ours.gguf")
    try:
        f_orphan = _record(run, "orphan", orphan.pid, list(orphan.args), dead_owner)  # type: ignore[arg-type]
        f_stubborn = _record(run, "stubborn", stubborn.pid, list(stubborn.args), dead_owner)  # type: ignore[arg-type]
        # pid recorded for another command line (a reused pid): left alone, file removed
        f_stranger = _record(
            run, "stranger", stranger.pid, ["llama-server", "--model", "x.gguf"], dead_owner
        )
        # a live owner (this process): not an orphan
        f_ours = _record(run, "ours", ours.pid, list(ours.args), os.getpid())  # type: ignore[arg-type]
        # a record whose child is long gone
        f_gone = _record(run, "gone", _dead_pid(), ["llama-server"], dead_owner)
        (run / "junk.json").write_text("{not json")

        t0 = time.monotonic()
        killed = reap_orphans(run, grace=0.5)
        assert sorted(killed) == sorted([orphan.pid, stubborn.pid])
        assert orphan.wait(5) == -signal.SIGTERM
        assert stubborn.wait(5) == -signal.SIGKILL
        assert time.monotonic() - t0 >= 0.5  # the stubborn one got its grace period
        assert stranger.poll() is None and ours.poll() is None
        assert not f_orphan.exists() and not f_stubborn.exists()
        assert not f_stranger.exists() and not f_gone.exists()
        assert not (run / "junk.json").exists()
        assert f_ours.exists()
        assert reap_orphans(tmp_path / "missing") == []
    finally:
        for p in (orphan, stubborn, stranger, ours):
            p.kill()
            p.wait(5)
