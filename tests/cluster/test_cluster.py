"""Three server_core nodes behind HAProxy (the generated configuration), faults at the
node level: SIGKILL mid-stream, SIGTERM drain, SIGSTOP; then ``harness chaos`` through
the balancer. Each test prints a ``cluster:`` line of its measurements (docs/scale-out.md
has the table of a run)."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer

from harness.client import StreamResult, stream_request
from harness.fake_llama.generate import expected_text
from tests.cluster.cluster import (
    CHECK_FALL,
    CHECK_INTERVAL,
    CHECK_TIMEOUT,
    HEADER_TIMEOUT,
    IDLE_TIMEOUT,
    Cluster,
    Node,
    ask,
    chat_body,
    cluster,
    report_line,
    served_by,
)
from tests.integration.procs import reactor, spawn

pytestmark = pytest.mark.timeout(90)

# HAProxy marks a node down after CHECK_FALL failed checks, one per interval, each
# failing at once (refused) or after the check timeout (a frozen node).
DETECTION_BOUND = CHECK_FALL * (CHECK_INTERVAL + CHECK_TIMEOUT) + 2.0


@dataclass
class RouteAround:
    """What clients saw from a fault until requests were answered again for good."""

    seconds: float
    outcomes: Counter[str] = field(default_factory=Counter)
    nodes: Counter[str] = field(default_factory=Counter)


def check_answer(result: StreamResult, model: str, allowed: list[Node]) -> None:
    """A 2xx answer comes from a node that serves ``model``, in ``model``'s name."""
    if result.status is None or result.status >= 300:
        return
    node = served_by(result)
    assert node in [f"{n.name}/{model}" for n in allowed], (node, model)
    assert result.model == model, result.summary()


async def route_around(
    c: Cluster, model: str, since: float, *, streak: int = 5, timeout: float = 2.5
) -> RouteAround:
    """Short requests one after another until ``streak`` in a row are done; the time from
    ``since`` to the first of them."""
    seen = RouteAround(0.0)
    run_start: float | None = None
    run = 0
    deadline = reactor.seconds() + 25
    while run < streak:
        assert reactor.seconds() < deadline, f"never routed around: {seen}"
        sent = reactor.seconds()
        result = await ask(c, model, 3, timeout=timeout)
        check_answer(result, model, c.serving(model))
        seen.outcomes[result.outcome] += 1
        seen.nodes[served_by(result) or "-"] += 1
        if result.outcome == "done":
            run_start = sent if run == 0 else run_start
            run += 1
        else:
            run = 0
    assert run_start is not None
    seen.seconds = run_start - since
    return seen


async def keeps_succeeding(c: Cluster, model: str, survivors: list[Node], n: int = 10) -> None:
    results = await defer.gatherResults(
        [defer.Deferred.fromCoroutine(ask(c, model, 3)) for _ in range(n)]
    )
    for result in results:
        assert result.outcome == "done", result.summary()
        check_answer(result, model, survivors)


async def streaming_node(c: Cluster, candidates: list[Node]) -> Node:
    """The node with a response in flight (its ``server_core_http_in_flight`` is highest:
    every node counts this scrape too)."""
    counts: dict[str, float] = {}
    for node in candidates:
        scrape = await stream_request(node.url + "/metrics", None, method="GET", timeout=5)
        assert scrape.body is not None, scrape.summary()
        match = re.search(rb"^server_core_http_in_flight ([0-9.]+)$", scrape.body, re.M)
        assert match, scrape.body[:500]
        counts[node.name] = float(match.group(1))
    busiest = max(counts, key=lambda name: counts[name])
    assert counts[busiest] >= 2, counts
    return c.node(busiest)


async def stream_in_flight(
    c: Cluster, model: str, tokens: int
) -> tuple[defer.Deferred[StreamResult], Node]:
    """A slow stream through HAProxy, once its first event arrived, and its node."""
    first: defer.Deferred[None] = defer.Deferred()

    def on_event(event: object, t: float) -> None:
        if not first.called:
            first.callback(None)

    pending = defer.Deferred.fromCoroutine(
        ask(c, model, tokens, fault="token_delay=50ms", timeout=40, long=True, on_event=on_event)
    )
    await first
    return pending, await streaming_node(c, c.serving(model))


DIALECT_BODIES: dict[str, tuple[str, dict[str, object]]] = {
    "responses": ("/v1/responses", {"input": "hello", "max_output_tokens": 40}),
    "messages": (
        "/v1/messages",
        {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 40},
    ),
    "native": ("/completion", {"prompt": "hello", "n_predict": 40}),
}


async def dialect_streams(c: Cluster, model: str) -> dict[str, defer.Deferred[StreamResult]]:
    """A slow stream of ``model`` in each other dialect, once each has its first event."""
    pending: dict[str, defer.Deferred[StreamResult]] = {}
    for dialect, (path, extra) in DIALECT_BODIES.items():
        first: defer.Deferred[None] = defer.Deferred()

        def on_event(event: object, t: float, first: defer.Deferred[None] = first) -> None:
            if not first.called:
                first.callback(None)

        pending[dialect] = defer.Deferred.fromCoroutine(
            stream_request(
                c.url + path,
                {"model": model, "stream": True, "ignore_eos": True, **extra},
                headers={"X-Fault": "token_delay=50ms"},
                timeout=30,
                on_event=on_event,
            )
        )
        await first
    return pending


def whole_text(model: str, tokens: int) -> str:
    return "".join(expected_text(chat_body(model, tokens, long=True))[0])


@pytest_twisted.ensureDeferred
async def test_sigkill_mid_stream_cuts_the_body_and_the_other_node_takes_over(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        model = "shared-ab"
        pending, victim = await stream_in_flight(c, model, 60)
        survivors = [n for n in c.serving(model) if n is not victim]
        others = await dialect_streams(c, victim.models[0])  # the node's own model
        t0 = reactor.seconds()
        victim.signal("KILL")
        cut = await pending
        # A cut HTTP body: no last chunk, the connection closed. Never a clean end.
        assert cut.outcome == "truncated" and cut.end_reason == "lost", cut.summary()
        assert served_by(cut) == f"{victim.name}/{model}"
        for dialect, other in others.items():  # the same in every dialect
            result = await other
            assert result.dialect == dialect, result.summary()
            assert result.outcome == "truncated" and result.end_reason == "lost", result.summary()
            assert served_by(result) == f"{victim.name}/{victim.models[0]}"
            assert result.text, result.summary()
        assert whole_text(model, 60).startswith(cut.text) and cut.text != whole_text(model, 60)
        moved = await route_around(c, model, t0)
        await c.wait_state(model, victim.name, "DOWN", DETECTION_BOUND)
        noticed = reactor.seconds() - t0
        await keeps_succeeding(c, model, survivors)
        alone = await ask(c, victim.models[0])  # the model no other node serves
        assert alone.outcome == "http_error" and alone.status == 503, alone.summary()
        assert alone.headers.get("retry-after") == ["2"], alone.headers
        report_line(
            "sigkill",
            victim=victim.name,
            cut_after_events=cut.n_events,
            route_around_s=round(moved.seconds, 2),
            marked_down_s=round(noticed, 2),
            outcomes=dict(moved.outcomes),
            served=dict(moved.nodes),
        )
        assert noticed < DETECTION_BOUND + 1.0


@pytest_twisted.ensureDeferred
async def test_sigterm_drain_fails_ready_first_and_lets_the_stream_finish(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        model = "shared-bc"
        pending, victim = await stream_in_flight(c, model, 100)
        survivors = [n for n in c.serving(model) if n is not victim]
        t0 = reactor.seconds()
        victim.signal("TERM")
        moved = await route_around(c, model, t0)
        await c.wait_state(model, victim.name, "DOWN", DETECTION_BOUND)
        noticed = reactor.seconds() - t0
        ready = await stream_request(victim.url + "/ready", None, method="GET", timeout=3)
        assert ready.outcome == "connect_error" or ready.status == 503, ready.summary()
        await keeps_succeeding(c, model, survivors)
        # /ready failed, the balancer noticed, new requests went elsewhere: all while the
        # stream on the draining node was still running.
        assert not pending.called, "the stream ended before the drain was observed"
        finished = await pending
        assert finished.outcome == "done", finished.summary()
        assert finished.text == whole_text(model, 100)
        assert served_by(finished) == f"{victim.name}/{model}"
        assert victim.server is not None
        assert await victim.server.when_exited(timeout=20) == 0
        report_line(
            "sigterm",
            victim=victim.name,
            marked_down_s=round(noticed, 2),
            route_around_s=round(moved.seconds, 2),
            stream_s=round(reactor.seconds() - t0, 2),
            outcomes=dict(moved.outcomes),
            served=dict(moved.nodes),
        )


@pytest_twisted.ensureDeferred
async def test_sigstop_node_is_routed_around_then_taken_back(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        model, victim = "shared-ab", c.node("node-a")
        survivors = [c.node("node-b")]
        frozen, _ = await stream_in_flight(c, "alpha", 40)  # in flight on the frozen node
        t0 = reactor.seconds()
        victim.signal("STOP")
        moved = await route_around(c, model, t0)
        await c.wait_state(model, victim.name, "DOWN", DETECTION_BOUND)
        noticed = reactor.seconds() - t0
        await keeps_succeeding(c, model, survivors)
        thawed_at = reactor.seconds()
        victim.signal("CONT")
        await c.wait_state(model, victim.name, "UP", 10)
        back = reactor.seconds() - thawed_at
        again = await ask(c, victim.models[0])
        assert again.outcome == "done" and served_by(again) == f"{victim.name}/alpha"
        # Marking a node down does not cut its sessions (a drain needs them): the stream
        # that was frozen ends honestly once the node runs again. Whole, or one error
        # event if its idle timer fired first on waking (the upstream's bytes wait in
        # the socket, its timer is already due).
        thawed = await frozen
        assert thawed.outcome in ("done", "error_event"), thawed.summary()
        if thawed.outcome == "done":
            assert thawed.text == whole_text("alpha", 40)
        else:
            assert thawed.error is not None and "sent no data" in thawed.error["message"]
        report_line(
            "sigstop",
            victim=victim.name,
            marked_down_s=round(noticed, 2),
            route_around_s=round(moved.seconds, 2),
            up_again_s=round(back, 2),
            frozen_stream=thawed.outcome,
            outcomes=dict(moved.outcomes),
            served=dict(moved.nodes),
        )
        assert noticed < DETECTION_BOUND + 1.0


@pytest_twisted.ensureDeferred
async def test_chaos_through_the_balancer_finds_no_violation(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        report = tmp_path / "chaos.json"
        argv = [sys.executable, "-m", "harness.chaos", "--target", c.url]
        argv += ["--model", "shared-ab", "--requests", "300", "--concurrency", "16"]
        argv += ["--seed", "17", "--progress", "0", "--json", str(report)]
        argv += ["--idle-timeout", str(IDLE_TIMEOUT), "--header-timeout", str(HEADER_TIMEOUT)]
        chaos = spawn("chaos", argv)
        c.children.append(chaos)
        code = await chaos.when_exited(timeout=80)
        data = json.loads(report.read_text())
        summary = {k: data[k] for k in ("requests", "outcomes", "violation_counts", "elapsed_s")}
        report_line("chaos", **summary, dialects=sorted(data["dialects"]))
        assert code == 0, "\n".join(chaos.lines[-40:])
        assert data["violations"] == [] and data["requests"] == 300
        served = Counter(line.split()[3] for line in c.haproxy.lines if " be_1_shared-ab/" in line)
        assert set(served) == {"be_1_shared-ab/node-a", "be_1_shared-ab/node-b"}, served


@pytest_twisted.ensureDeferred
async def test_routing_by_the_body_with_keys_never_answers_with_another_model(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, api_key="cluster-key") as c:
        # Every node is UP although /ready?model= needs the key: the checks send it.
        bare = await stream_request(
            c.node("node-a").url + "/ready?model=alpha", None, method="GET", timeout=5
        )
        assert bare.status == 401, bare.summary()
        asked: Counter[str] = Counter()
        for model in ("alpha", "shared-ab", "beta", "shared-bc", "gamma") * 4:
            result = await ask(c, model)
            assert result.outcome == "done", result.summary()
            check_answer(result, model, c.serving(model))
            asked[served_by(result) or "-"] += 1
        assert {"node-a/shared-ab", "node-b/shared-ab", "node-b/shared-bc"} <= set(asked)
        unknown = await ask(c, "no-such-model")
        assert unknown.status == 404 and unknown.error is not None, unknown.summary()
        assert unknown.error["code"] == "model_not_found"
        # A body over max_body_bytes: with ``model`` first HAProxy still reads it; with
        # ``model`` after ``messages`` (as the OpenAI SDK writes it) it cannot, and the
        # balancer says so (413) instead of guessing a node.
        long_text = [{"role": "user", "content": "x" * 300_000}]
        first = {**chat_body("gamma", 3), "messages": long_text}
        last = {"messages": long_text, **chat_body("gamma", 3)}
        last["messages"] = long_text
        for _ in range(3):
            read = await ask(c, "gamma", body=first)
            assert read.outcome == "done", read.summary()
            check_answer(read, "gamma", c.serving("gamma"))
            unread = await ask(c, "gamma", body=last)
            assert unread.status == 413 and unread.error is not None, unread.summary()
            assert "max_body_bytes" in unread.error["message"]
        report_line("routing", served=dict(asked))
