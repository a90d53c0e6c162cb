"""/proc reads, on this test process itself (no child needed)."""

from __future__ import annotations

import os
import sys

from server_core.process.procfs import (
    ProcStat,
    group_alive,
    is_running,
    proc_cmdline,
    proc_stat,
)


def test_stat_of_this_process() -> None:
    st = proc_stat(os.getpid())
    assert st is not None and st.running
    assert st.pgrp == os.getpgrp()
    assert st.starttime > 0
    assert st == (st.state, st.pgrp, st.starttime)  # still a tuple: st[1] is the group


def test_no_such_pid() -> None:
    assert proc_stat(0) is None  # /proc/0 never exists
    assert proc_cmdline(0) is None
    assert not is_running(0)


def test_running_means_not_a_zombie() -> None:
    assert ProcStat("S", 1, 1).running and ProcStat("R", 1, 1).running
    assert not ProcStat("Z", 1, 1).running and not ProcStat("X", 1, 1).running


def test_is_running_checks_the_start_time_when_given() -> None:
    st = proc_stat(os.getpid())
    assert st is not None
    assert is_running(os.getpid()) and is_running(os.getpid(), st.starttime)
    assert not is_running(os.getpid(), st.starttime + 1)  # the pid, but another process


def test_cmdline_of_this_process() -> None:
    cmdline = proc_cmdline(os.getpid())
    assert cmdline is not None
    assert cmdline[1:] == sys.orig_argv[1:]


def test_our_group_is_alive() -> None:
    assert group_alive(os.getpgrp())
