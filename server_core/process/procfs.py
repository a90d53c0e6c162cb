"""Facts about other processes, read from ``/proc`` (Linux).

Pure, blocking reads, no Twisted. A pid alone may be reused; a pid with its start time
(``ProcStat.starttime``) names one process for ever, which is how the run-state files
(``server_core.process.orphans``) tell a leftover llama-server from a stranger.
"""

from __future__ import annotations

import os
from typing import NamedTuple

__all__ = ["ProcStat", "group_alive", "is_running", "proc_cmdline", "proc_stat"]

_GONE = ("Z", "X")  # zombie, dead: the pid exists but nothing runs any more


class ProcStat(NamedTuple):
    """The fields of ``/proc/PID/stat`` that server_core reads."""

    state: str  # R, S, D, T, Z, X, ...
    pgrp: int  # process group id
    starttime: int  # clock ticks after boot at which the process started

    @property
    def running(self) -> bool:
        """Not a zombie: something still runs under this pid."""
        return self.state not in _GONE


def proc_stat(pid: int) -> ProcStat | None:
    """State, process group and start time of ``pid``, or None when there is no such pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read().decode("utf-8", "replace")
        # The command name (field 2) is in parentheses and may hold spaces and ")".
        fields = data[data.rindex(")") + 2 :].split()
        return ProcStat(fields[0], int(fields[2]), int(fields[19]))
    except (OSError, ValueError, IndexError):
        return None


def proc_cmdline(pid: int) -> list[str] | None:
    """The argv of ``pid``, or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    return [part.decode("utf-8", "surrogateescape") for part in raw.split(b"\0")[:-1]]


def is_running(pid: int, start: int | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, if ``start`` is given, started then."""
    st = proc_stat(pid)
    if st is None or not st.running:
        return False
    return start is None or st.starttime == start


def group_alive(pgid: int) -> bool:
    """Whether any process that is not a zombie is in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg also succeeds for a group of zombies: look at the members themselves.
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st is not None and st.pgrp == pgid and st.running:
                return True
    return False
