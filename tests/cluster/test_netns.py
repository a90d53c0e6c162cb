"""A node whose network is cut: it runs in a network namespace the test creates, behind
the same generated HAProxy file; the host end of its link goes down mid-stream."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer

from harness.client import StreamResult
from tests.cluster.cluster import Setup, ask, cluster, report_line, served_by
from tests.cluster.netns import namespace
from tests.cluster.test_cluster import (
    DETECTION_BOUND,
    check_answer,
    keeps_succeeding,
    route_around,
)
from tests.integration.procs import reactor

pytestmark = pytest.mark.timeout(90)

SERVER_TIMEOUT = 4.0  # HAProxy's timeout server here: how long a silent stream may hang


@pytest_twisted.ensureDeferred
async def test_a_cut_network_is_routed_around_and_its_stream_ends_cut(tmp_path: Path) -> None:
    with namespace() as ns:
        setup = Setup(
            layout=(
                ("node-a", "127.0.0.2", ("alpha", "shared")),
                ("node-n", ns.inner, ("nu", "shared")),
            ),
            api_key="netcut-key",  # a node on a non-loopback address must have keys
            prefixes={"node-n": ns.prefix},
            server_timeout=f"{int(SERVER_TIMEOUT)}s",
        )
        async with cluster(tmp_path, setup=setup) as c:
            victim = c.node("node-n")
            first: defer.Deferred[None] = defer.Deferred()

            def on_event(event: object, t: float) -> None:
                if not first.called:
                    first.callback(None)

            pending: defer.Deferred[StreamResult] = defer.Deferred.fromCoroutine(
                ask(
                    c, "nu", 80, fault="token_delay=100ms", timeout=40, long=True, on_event=on_event
                )
            )
            await first
            t0 = reactor.seconds()
            ns.cut()
            moved = await route_around(c, "shared", t0)
            await c.wait_state("shared", victim.name, "DOWN", DETECTION_BOUND)
            noticed = reactor.seconds() - t0
            await keeps_succeeding(c, "shared", [c.node("node-a")])
            cut = await pending
            cut_after = reactor.seconds() - t0
            # The node still writes into a link that is gone: HAProxy's timeout server
            # ends the response, and the client sees the body cut, never a clean end.
            assert cut.outcome == "truncated" and cut.end_reason == "lost", cut.summary()
            assert served_by(cut) == "node-n/nu"
            assert SERVER_TIMEOUT - 0.5 < cut_after < SERVER_TIMEOUT + 3, cut_after
            ns.restore()
            restored_at = reactor.seconds()
            await c.wait_state("shared", victim.name, "UP", 10)
            await c.wait_state("nu", victim.name, "UP", 10)  # each backend checks for itself
            back = reactor.seconds() - restored_at
            again = await ask(c, "nu")
            assert again.outcome == "done", again.summary()
            check_answer(again, "nu", [victim])
            report_line(
                "netcut",
                marked_down_s=round(noticed, 2),
                route_around_s=round(moved.seconds, 2),
                stream_cut_s=round(cut_after, 2),
                up_again_s=round(back, 2),
                outcomes=dict(moved.outcomes),
                served=dict(moved.nodes),
            )
