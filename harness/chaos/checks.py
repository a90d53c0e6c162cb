"""The checks after a chaos run: is the server still well once every client is gone?

Spawn mode (``after_run_checks``), in this order: every upstream generation ended
(``upstream_slots``), ``/health`` answers 200, no client connection is left and no more
file descriptors than at the start beyond the upstream pool (``fds``), a bounded RSS
growth (``rss``), with ``--kill-restart`` SIGKILL and a restart
(``harness.chaos.restart``), SIGTERM stops server_core in time (``stop``), and no child process
stays behind (``children``). Target mode (``target_checks``): ``/health`` only.
Each check records the seconds it took (``took_s``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.chaos.options import ChaosOptions
from harness.chaos.procfs import FdCensus, descendants
from harness.chaos.records import Check
from harness.chaos.restart import kill_and_restart
from harness.chaos.stack import SpawnedStack
from harness.chaos.waiting import poll, wait_until_gone
from harness.client import DONE, StreamResult, stream_request

__all__ = ["after_run_checks", "target_checks"]


async def _get_json(reactor: Any, url: str, timeout: float = 5.0) -> StreamResult:
    return await stream_request(url, None, method="GET", timeout=timeout, reactor=reactor)


class _Timed:
    """The checks so far, each stamped with the seconds since the previous one."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.checks: list[Check] = []
        self._t_phase = reactor.seconds()

    def add(self, check: Check) -> None:
        now = self.reactor.seconds()
        check.data["took_s"] = round(now - self._t_phase, 3)
        self._t_phase = now
        self.checks.append(check)


async def after_run_checks(
    options: ChaosOptions,
    stack: SpawnedStack,
    reactor: Any,
    base: FdCensus,
    base_rss: int,
) -> list[Check]:
    """Check the spawned server against its state before the run (``base`` fds and
    ``base_rss``), then stop it: it must stop in time and leave no child behind."""
    timed = _Timed(reactor)
    managed_pids, managed_urls = await _managed_children(reactor, stack.url)
    fake_urls = [f.url for f in stack.all_fakes] + managed_urls
    timed.add(await _slots_check(reactor, fake_urls, stack.settings.idle_timeout + 8.0))
    timed.add(_health_check(await _get_json(reactor, stack.url + "/health")))
    timed.add(await _fds_check(options, stack, reactor, base))
    timed.add(_rss_check(options, stack.rss_kib(), base_rss))
    if options.kill_restart:
        for check in await kill_and_restart(stack, reactor, managed_pids):
            timed.add(check)
        managed_pids, _ = await _managed_children(reactor, stack.url)
    # Stop server_core like an operator: nothing of it may stay behind.
    children = sorted(set(descendants(stack.pid)) | set(managed_pids))
    status, in_time = await stack.stop_server()
    timed.add(
        Check(
            "stop",
            in_time and status == 0,
            f"SIGTERM -> exit status {status}" + ("" if in_time else " (needed SIGKILL)"),
            {"exit_status": status},
        )
    )
    left = await wait_until_gone(children, reactor, timeout=5.0)
    timed.add(_children_check(children, managed_pids, left))
    return timed.checks


async def target_checks(options: ChaosOptions, reactor: Any) -> list[Check]:
    """Target mode: ``/health`` answers 200 (a 404 means it is not offered)."""
    assert options.target is not None
    health = await _get_json(reactor, options.target + "/health")
    if health.status == 404:
        return [Check("health", True, "GET /health -> 404 (not offered; not checked)")]
    return [_health_check(health)]


def _health_check(health: StreamResult) -> Check:
    return Check(
        "health",
        health.outcome == DONE and health.status == 200,
        f"GET /health -> {health.status} {health.outcome}",
    )


async def _managed_children(reactor: Any, url: str) -> tuple[list[int], list[str]]:
    """Pids and URLs of the managed child(ren), as server_core reports them."""
    running = await _get_json(reactor, url + "/running")
    entries = running.json_body.get("data", []) if isinstance(running.json_body, dict) else []
    pids = [int(e["pid"]) for e in entries if isinstance(e, dict) and e.get("pid")]
    urls = [
        f"http://127.0.0.1:{e['port']}" for e in entries if isinstance(e, dict) and e.get("port")
    ]
    return pids, urls


async def _busy_slots(reactor: Any, urls: Sequence[str]) -> dict[str, int]:
    """URL -> slots still processing (-1: ``/slots`` did not answer) for busy ones."""
    busy: dict[str, int] = {}
    for url in urls:
        r = await _get_json(reactor, url + "/slots")
        slots = r.json_body if isinstance(r.json_body, list) else []
        n = sum(1 for s in slots if isinstance(s, dict) and s.get("is_processing"))
        if n or r.outcome != DONE:
            busy[url] = n if r.outcome == DONE else -1
    return busy


async def _slots_check(reactor: Any, urls: Sequence[str], timeout: float) -> Check:
    """Every upstream generation ended (disconnects and timeouts were passed on)."""
    busy: dict[str, int] = {}

    async def slots_idle() -> bool:
        nonlocal busy
        busy = await _busy_slots(reactor, urls)
        return not busy

    idle = await poll(reactor, slots_idle, timeout=timeout, interval=0.2)
    return Check(
        "upstream_slots",
        bool(idle),
        "every upstream generation ended" if idle else f"still busy: {busy}",
        {"busy": busy},
    )


async def _fds_check(
    options: ChaosOptions, stack: SpawnedStack, reactor: Any, base: FdCensus
) -> Check:
    """No client connection left once every client is gone; no fd leaked beyond the
    tolerance (the upstream pool is counted apart: it may keep idle connections)."""
    census = stack.census()

    def no_clients() -> bool:
        nonlocal census
        census = stack.census()
        return census.client_conns == 0

    await poll(reactor, no_clients, timeout=5.0)
    settings = stack.settings
    hosts = settings.upstream_hosts
    pool_cap = options.concurrency * hosts + options.fd_tolerance
    base_fixed = base.total - base.upstream_conns
    now_fixed = census.total - census.upstream_conns
    fds_ok = (
        census.client_conns == 0
        and now_fixed <= base_fixed + options.fd_tolerance
        and census.upstream_conns <= pool_cap
    )
    return Check(
        "fds",
        fds_ok,
        f"{base.total} -> {census.total} open fds; without the upstream pool "
        f"{base_fixed} -> {now_fixed} (tolerance {options.fd_tolerance}); "
        f"client connections {census.client_conns}; pooled upstream "
        f"{census.upstream_conns} (cap {pool_cap})",
        {"before": base.to_json(), "after": census.to_json()},
    )


def _rss_check(options: ChaosOptions, rss: int, base_rss: int) -> Check:
    growth_mb = (rss - base_rss) / 1024.0
    return Check(
        "rss",
        growth_mb <= options.max_rss_growth_mb,
        f"{base_rss / 1024:.1f} -> {rss / 1024:.1f} MiB ({growth_mb:+.1f} MiB, "
        f"bound {options.max_rss_growth_mb:g})",
        {"before_kib": base_rss, "after_kib": rss, "growth_mb": round(growth_mb, 2)},
    )


def _children_check(children: list[int], managed_pids: list[int], left: list[int]) -> Check:
    if left:
        detail = f"still alive after stop: {left}"
    else:
        detail = f"{len(children)} child process(es) {children} all gone" + (
            "" if managed_pids else " (no managed child was running at the end)"
        )
    return Check(
        "children",
        not left,
        detail,
        {"children": children, "managed_pids": managed_pids, "left": left},
    )
