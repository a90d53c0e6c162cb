"""server_core measured from outside, through ``/proc`` (Linux).

Pure reads: whether a process is alive, its descendants, its RSS (``rss_kib``, shared
with the rest of the harness from ``harness._process``) and its open file descriptors
split into client connections, upstream connections and the rest (``FdCensus``). The
after-run checks (``harness.chaos.checks``) compare these before and after a run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from harness._process import rss_kib

__all__ = ["FdCensus", "alive", "descendants", "fd_census", "rss_kib"]


def alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren, ...)."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            parent_of[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found: list[int] = []
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        found += kids
        frontier += kids
    return sorted(found)


@dataclass
class FdCensus:
    """Open file descriptors of a process, by what they are."""

    total: int = 0
    client_conns: int = 0  # TCP connections accepted on the listening port
    upstream_conns: int = 0  # other TCP connections (the upstream pool)
    listening: int = 0
    other: int = 0  # pipes, files, epoll, ...

    def to_json(self) -> dict[str, int]:
        """The counts as the JSON report shows them."""
        return {
            "total": self.total,
            "client_conns": self.client_conns,
            "upstream_conns": self.upstream_conns,
            "listening": self.listening,
            "other": self.other,
        }


def _tcp_sockets() -> dict[str, tuple[int, str]]:
    """inode -> (local port, state hex) for every TCP socket of the host."""
    out: dict[str, tuple[int, str]] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as table:
                next(table, None)
                for line in table:
                    cols = line.split()
                    if len(cols) < 10:
                        continue
                    out[cols[9]] = (int(cols[1].rsplit(":", 1)[1], 16), cols[3])
        except FileNotFoundError:
            continue
    return out


def fd_census(pid: int, listen_port: int) -> FdCensus:
    """Count the open fds of ``pid``; connections to ``listen_port`` are clients."""
    census = FdCensus()
    sockets = _tcp_sockets()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        census.total += 1
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        info = sockets.get(m.group(1)) if m else None
        if info is None:
            census.other += 1
        elif info[1] == "0A":  # TCP_LISTEN
            census.listening += 1
        elif info[0] == listen_port:
            census.client_conns += 1
        else:
            census.upstream_conns += 1
    return census
