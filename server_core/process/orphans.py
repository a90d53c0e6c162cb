"""Run-state files, and the reaping of children a dead server_core left behind.

Each child gets ``<state_dir>/<alias>-<pid>.json`` with its pid, process group, argv,
our pid and the start times of both processes (from ``/proc/PID/stat``, which tell a
live process from a reused pid). The file goes away when the child is reaped. If
server_core dies without reaping (SIGKILL, OOM, power cut of a container's PID 1), the
next server_core calls ``reap_orphans()`` at start: every recorded group whose owner is
gone and whose leader still runs the recorded command line is sent SIGTERM, then
SIGKILL after a grace period. PDEATHSIG (``server_core.process.spawn``) covers most of
this already; these files cover a child that ignores SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from twisted.logger import Logger

from server_core.process.procfs import group_alive, is_running, proc_cmdline, proc_stat

__all__ = ["default_state_dir", "reap_orphans", "remove_run_state", "write_run_state"]

log = Logger()

_GROUPS_GONE_WAIT = 5.0  # after SIGKILL: how long to wait for the kernel to finish


def default_state_dir() -> str:
    """``$XDG_RUNTIME_DIR/server-core``, else ``~/.cache/server-core/run``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "server-core")
    return os.path.join(os.path.expanduser("~"), ".cache", "server-core", "run")


def _safe_name(alias: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", alias)[:64] or "alias"


def write_run_state(state_dir: str, alias: str, pid: int, argv: list[str]) -> str | None:
    """Record the child ``pid`` (its own group's leader); the file's path, or None when
    it cannot be written (logged: the child runs anyway, only unrecorded)."""
    own = proc_stat(os.getpid())
    child = proc_stat(pid)
    record = {
        "version": 1,
        "alias": alias,
        "pid": pid,
        "pgid": pid,
        "owner_pid": os.getpid(),
        "owner_start": own.starttime if own else None,
        "child_start": child.starttime if child else None,
        "argv": argv,
        "created": time.time(),
    }
    path = os.path.join(state_dir, f"{_safe_name(alias)}-{pid}.json")
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(record, fh)
        os.replace(tmp, path)
    except OSError as e:
        log.warn(
            "[{alias}] cannot write run-state file {path}: {err}", alias=alias, path=path, err=e
        )
        return None
    return path


def remove_run_state(path: str | None) -> None:
    """Remove a run-state file (the child was reaped); a missing one is fine."""
    if path is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)


# -- reaping ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Record:
    owner: int
    owner_start: int | None
    pid: int
    pgid: int
    child_start: int | None
    argv: list[str]


def _read_record(path: Path) -> _Record | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return _Record(
            owner=int(record["owner_pid"]),
            owner_start=record.get("owner_start"),
            pid=int(record["pid"]),
            pgid=int(record.get("pgid", record["pid"])),
            child_start=record.get("child_start"),
            argv=[str(a) for a in record["argv"]],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _cmdline_matches(cmdline: list[str], argv: list[str]) -> bool:
    """``cmdline`` runs ``argv``: same arguments at the end, and the executable (or a
    script of that name run by an interpreter, or our wrapper) among the words."""
    if not argv or len(cmdline) < len(argv):
        return False
    if argv[1:] and cmdline[len(cmdline) - len(argv) + 1 :] != argv[1:]:
        return False
    exe = os.path.basename(argv[0])
    head = cmdline[: len(cmdline) - len(argv) + 1]
    return any(os.path.basename(word) == exe for word in head)


def _why_stale(record: _Record) -> str | None:
    """Why the recorded leader is not our orphan any more, or None when it is."""
    st = proc_stat(record.pid)
    if st is None or not st.running:
        return "no longer runs"
    if record.child_start is not None and st.starttime != record.child_start:
        return "pid was reused"
    if st.pgrp != record.pgid:
        return "does not lead the recorded process group"
    cmdline = proc_cmdline(record.pid)
    if cmdline is None or not _cmdline_matches(cmdline, record.argv):
        return "runs another command line"
    return None


def _wait_groups_gone(pgids: list[int], seconds: float, step: float) -> list[int]:
    """Poll until every group in ``pgids`` is gone or ``seconds`` passed; the rest."""
    deadline = time.monotonic() + seconds
    pending = [pgid for pgid in pgids if group_alive(pgid)]
    while pending and time.monotonic() < deadline:
        time.sleep(step)
        pending = [pgid for pgid in pending if group_alive(pgid)]
    return pending


def _kill_groups(pgids: list[int], grace: float) -> None:
    """SIGTERM already sent: SIGKILL what is left after ``grace``, and wait for it."""
    pending = _wait_groups_gone(pgids, grace, 0.05)
    for pgid in pending:
        log.warn("orphaned group {pgid} ignored SIGTERM: SIGKILL", pgid=pgid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    # SIGKILL is delivered asynchronously: return only once the groups are gone, so the
    # caller never starts new children next to dying ones.
    _wait_groups_gone(pending, _GROUPS_GONE_WAIT, 0.01)


def reap_orphans(
    state_dir: str | os.PathLike[str] | None = None, *, grace: float = 5.0
) -> list[int]:
    """Kill llama-server process groups left behind by a server_core that died.

    For each run-state file in ``state_dir`` (default ``default_state_dir()``): if the
    recorded owner (pid + start time) still runs, the file is left alone. Otherwise,
    if the recorded leader still runs (same start time when recorded), leads the
    recorded group and its ``/proc/PID/cmdline`` matches the recorded argv, its group
    gets SIGTERM, and SIGKILL after ``grace`` seconds. Stale files (leader gone, pid
    reused by another program) are removed without killing anything. Blocking: call it
    once at start-up, before the reactor runs. Returns the process groups signalled.
    """
    directory = Path(state_dir if state_dir is not None else default_state_dir())
    if not directory.is_dir():
        return []
    killed: list[tuple[int, Path]] = []
    for path in sorted(directory.glob("*.json")):
        record = _read_record(path)
        if record is None:
            log.warn("removing unreadable run-state file {path}", path=str(path))
            remove_run_state(str(path))
            continue
        if is_running(record.owner, record.owner_start):
            continue  # a live server_core (maybe this one) owns it
        reason = _why_stale(record)
        if reason is not None:
            log.info(
                "stale run-state file {path}: pid {pid} {reason}",
                path=str(path),
                pid=record.pid,
                reason=reason,
            )
            remove_run_state(str(path))
            continue
        log.warn(
            "orphaned llama-server group {pgid} (owner {owner} is gone): SIGTERM",
            pgid=record.pgid,
            owner=record.owner,
        )
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pgid, signal.SIGTERM)
        killed.append((record.pgid, path))
    _kill_groups([pgid for pgid, _ in killed], grace)
    for _, path in killed:
        remove_run_state(str(path))
    return [pgid for pgid, _ in killed]
