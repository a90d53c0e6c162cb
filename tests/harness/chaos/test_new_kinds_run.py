"""The later kinds in short seeded spawn-mode runs: each ends honestly on server_core,
``--kill-restart`` finds no child left and the port free, and a server that lets
``:`` pings keep a stalled stream open is flagged."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor

from harness.chaos import ChaosOptions, run_chaos
from harness.chaos.restart import port_is_free
from tests.harness.chaos.support import tables_add_up
from tests.harness.chaos.test_runner import bad_proxy

reactor: Any = _reactor

# kind -> (requests, seed, the outcomes the run must show for it)
_RUNS = {
    "ping": (8, 2, {"done", "error_event"}),
    "live_fault": (10, 1, {"done", "http_error"}),
    "embeddings": (12, 1, {"done", "http_error"}),
    "startup": (8, 1, {"done", "http_error"}),
    "freeze": (3, 1, {"error_event"}),
}


async def _run(**kw: Any) -> dict[str, Any]:
    opts = ChaosOptions(concurrency=4, idle_timeout=1.0, header_timeout=1.5, progress_every=0, **kw)
    report = await run_chaos(opts, reactor, log=lambda line: None)
    assert report.setup_error is None, report.setup_error
    data = report.to_json()
    assert data["violations"] == [], report.format_text()
    assert all(c["ok"] for c in data["checks"]), report.format_text()
    tables_add_up(data)
    return data


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", sorted(_RUNS))
@pytest_twisted.ensureDeferred
async def test_a_new_kind_ends_honestly_on_server_core(kind: str) -> None:
    requests, seed, outcomes = _RUNS[kind]
    data = await _run(requests=requests, seed=seed, kinds=(kind,))
    row = data["kinds"][kind]
    assert row["requests"] == requests
    if kind == "freeze":  # every freeze ended with an error, none looked complete
        assert row["outcomes"]["error_event"] == requests
    seen = {name for name, n in row["outcomes"].items() if n}
    assert seen >= outcomes, row


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_kill_restart_leaves_no_child_and_frees_the_port() -> None:
    data = await _run(requests=6, seed=3, kinds=("clean", "crash"), kill_restart=True)
    checks = {c["name"]: c for c in data["checks"]}
    for name in ("kill_port", "kill_restart", "kill_orphans", "kill_serves"):
        assert checks[name]["ok"], checks[name]
    # The managed child of the killed server was running, and it is gone.
    assert checks["kill_orphans"]["children"]
    names = [c["name"] for c in data["checks"]]
    assert names.index("kill_serves") < names.index("stop") < names.index("children")


def test_port_is_free_sees_a_held_port() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert not port_is_free(port)
    assert port_is_free(port)


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_server_that_lets_pings_hold_a_stalled_stream_is_flagged() -> None:
    # bad_proxy relays the fake with no idle timeout: a stall with pings never ends.
    async with bad_proxy() as url:
        opts = ChaosOptions(
            target=url,
            model="m",
            requests=6,
            concurrency=6,
            seed=2,
            kinds=("ping",),
            idle_timeout=1.0,
            header_timeout=1.5,
            margin=1.0,
            progress_every=0,
        )
        report = await run_chaos(opts, reactor, log=lambda line: None)
    data = report.to_json()
    stalls = [r for r in data["records"] if "stall_after" in r["spec"]]
    assert stalls
    flagged = {v["index"] for v in data["violations"] if v["code"] in ("timeout", "late")}
    assert flagged >= {r["index"] for r in stalls if "p=" not in r["spec"]}
    assert report.exit_code == 1
