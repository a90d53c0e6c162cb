"""The spawn wrapper: the child leads its own process group and dies with its parent."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from server_core.process.procfs import proc_stat
from server_core.process.spawn import _WRAPPER
from tests.integration.process.support import gone

pytestmark = pytest.mark.timeout(30)


def test_wrapper_child_dies_with_its_parent(tmp_path: Path) -> None:
    """PDEATHSIG: SIGKILL the process that spawned the wrapper; the child gets SIGTERM."""
    parent_code = (
        "import os, subprocess, sys, time\n"
        f"wrapper = {_WRAPPER!r}\n"
        "child = subprocess.Popen([sys.executable, '-I', '-S', '-c', wrapper, str(os.getpid()),\n"
        "    sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(30)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 5
        # the wrapper calls setsid() before exec: wait for the child to lead its group
        while (st := proc_stat(child)) is not None and st[1] != child:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert st is not None and st[1] == child
        parent.kill()
        parent.wait(5)
        while not gone(child):
            assert time.monotonic() < deadline, "the child outlived its parent"
            time.sleep(0.01)
    finally:
        parent.kill()
        parent.wait(5)
