"""SIGKILL of server_core itself, then a restart (``--kill-restart``, spawn mode).

A server killed with SIGKILL cleans nothing up: its managed llama-server children
(here the fake running as one) outlive it unless something ends them. What must hold,
checked in this order once the run's requests are over:

* ``kill_port``: the listening port is free again once server_core is gone (no child
  inherited the listening socket);
* ``kill_restart``: server_core starts again with the same configuration on that same
  port;
* ``kill_orphans``: every child the killed server_core had (its descendants and the
  managed pids of ``GET /running``) is gone soon after the restart: the new server reaps
  the orphans recorded in its run directory;
* ``kill_serves``: the restarted server answers a clean request on a direct alias and on
  the managed alias (a fresh managed child starts).

The restarted server replaces the killed one in the stack, so the ``stop`` and
``children`` checks that follow apply to it.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

from harness.chaos.clean import first_unclean
from harness.chaos.procfs import descendants
from harness.chaos.records import Check
from harness.chaos.server_child import spawn_server
from harness.chaos.stack import SpawnedStack
from harness.chaos.waiting import poll, wait_until_gone

__all__ = ["ORPHAN_TIMEOUT", "kill_and_restart", "port_is_free"]

# Seconds the restarted server has to reap the killed one's children.
ORPHAN_TIMEOUT = 10.0


def port_is_free(port: int) -> bool:
    """True when nothing listens on (or holds) loopback ``port``: a bind succeeds."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def kill_and_restart(
    stack: SpawnedStack, reactor: Any, managed_pids: Sequence[int]
) -> list[Check]:
    """SIGKILL server_core, check the port and its children, restart it, check it
    serves. Returns the checks (a failed restart ends the list early)."""
    old = stack.server
    assert old is not None
    children = sorted(set(descendants(old.pid)) | set(managed_pids))
    old.signal("KILL")
    await old.when_exited(timeout=10.0)
    free = bool(await poll(reactor, lambda: port_is_free(stack.port), timeout=5.0))
    checks = [
        Check(
            "kill_port",
            free,
            f"port {stack.port} " + ("free after SIGKILL" if free else "still held after SIGKILL"),
            {"port": stack.port, "children_at_kill": children},
        )
    ]
    s = stack.settings
    stack.server = spawn_server(
        reactor,
        python=s.python,
        config_path=stack.config_path,
        workdir=stack.tmpdir,
        port=stack.port,
    )
    try:
        port = await stack.server.listening_port(timeout=60.0)
    except Exception as exc:
        tail = " | ".join(stack.log_tail(5))
        checks.append(Check("kill_restart", False, f"no restart: {exc!s:.200} {tail}"))
        return checks
    checks.append(Check("kill_restart", port == stack.port, f"restarted on port {port}"))
    left = await wait_until_gone(children, reactor, timeout=ORPHAN_TIMEOUT)
    checks.append(
        Check(
            "kill_orphans",
            not left,
            f"children of the killed server still alive: {left}"
            if left
            else f"{len(children)} child process(es) of the killed server all gone",
            {"children": children, "left": left},
        )
    )
    checks.append(await _serves(stack, reactor))
    return checks


async def _serves(stack: SpawnedStack, reactor: Any) -> Check:
    """One clean request per kind of alias: a direct fake and the managed child."""
    aliases = [stack.settings.direct_aliases[0]]
    if stack.managed_alias:
        aliases.append(stack.managed_alias)
    problem = await first_unclean(stack, aliases, reactor, "chaos restart")
    failed = [problem] if problem else []
    return Check(
        "kill_serves",
        not failed,
        "; ".join(failed) if failed else f"answers {', '.join(aliases)} after the restart",
    )
