"""ChildMetrics: the ready children's ``llamacpp:*`` families merged under a ``model`` label,
a child that fails skipped and counted; and ``fetch_body``, the bounded GET it is given."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.task import Clock

from server_core.errors import UpstreamError
from server_core.metrics.children import FAILURES, ChildMetrics, parse, relabelled
from server_core.testing import CannedAgent, CannedResponse
from server_core.upstream import BodyIncomplete, UpstreamClient
from server_core.upstream.fetch import fetch_body

# What a real llama-server started with --metrics answers (one family per kind of line).
LLAMA_A = b"""\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 12
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 30
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 1
# HELP fake_llama_requests_total Generation requests received by the fake.
# TYPE fake_llama_requests_total counter
fake_llama_requests_total 3
"""
LLAMA_B = b"""\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 5
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing{slot="0",model="what-the-child-calls-itself"} 0
# HELP llamacpp:n_tokens_max Largest observed n_tokens.
# TYPE llamacpp:n_tokens_max counter
llamacpp:n_tokens_max 4096
"""


class Process:
    def __init__(self, alias: str, state: str = "ready") -> None:
        self.alias = alias
        self.state = state
        self.base_url = f"http://127.0.0.1:{1000 + len(alias)}/{alias}"


class Context:
    """The two calls ChildMetrics makes of an ``ISharedContext``."""

    def __init__(self, *processes: Process) -> None:
        self.processes = {p.alias: p for p in processes}

    def running(self) -> list[dict[str, Any]]:
        rows = [{"alias": a, "state": p.state} for a, p in self.processes.items()]
        return [*rows, {"alias": "queued-only", "state": "stopped"}]

    def process_for(self, alias: str) -> Process | None:
        return self.processes.get(alias)


class Fetches:
    """A ``fetch`` whose answers the test gives, recording what was asked and cancelled."""

    def __init__(self) -> None:
        self.pending: dict[str, defer.Deferred[bytes]] = {}
        self.cancelled: list[str] = []

    def __call__(self, url: str) -> defer.Deferred[bytes]:
        d: defer.Deferred[bytes] = defer.Deferred(lambda _: self.cancelled.append(url))
        self.pending[url] = d
        return d

    def answer(self, alias: str, result: bytes | Exception) -> None:
        (url,) = [u for u in self.pending if f"/{alias}/" in u]
        d = self.pending.pop(url)
        if isinstance(result, Exception):
            d.errback(result)
        else:
            d.callback(result)


Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]


def exposition(text: bytes) -> tuple[list[str], Scrape]:
    """The HELP/TYPE lines, and every sample: (name, labels) -> value."""
    lines = text.decode().splitlines()
    headers = [line for line in lines if line.startswith("#")]
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return headers, found


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def rendered(children: ChildMetrics) -> defer.Deferred[bytes]:
    return defer.ensureDeferred(children.render())


def test_two_children_share_each_family_once_under_their_own_model_label() -> None:
    fetches, clock = Fetches(), Clock()
    children = ChildMetrics(Context(Process("a"), Process("b")), fetches, clock)
    out = rendered(children)
    # Both are asked at once, before either answered.
    assert sorted(fetches.pending) == [
        "http://127.0.0.1:1001/a/metrics",
        "http://127.0.0.1:1001/b/metrics",
    ]
    fetches.answer("b", LLAMA_B)
    assert not out.called  # still waiting for a
    fetches.answer("a", LLAMA_A)
    headers, s = exposition(out.result)
    for name in ("llamacpp:prompt_tokens_total", "llamacpp:requests_processing"):
        assert headers.count(f"# TYPE {name} {'counter' if 'total' in name else 'gauge'}") == 1
        assert len([h for h in headers if h.startswith(f"# HELP {name} ")]) == 1
    assert s[key("llamacpp:prompt_tokens_total", model="a")] == 12
    assert s[key("llamacpp:prompt_tokens_total", model="b")] == 5
    assert s[key("llamacpp:tokens_predicted_total", model="a")] == 30
    assert s[key("llamacpp:requests_processing", model="a")] == 1
    # The child's own labels stay; its own idea of "model" gives way to the alias.
    assert s[key("llamacpp:requests_processing", model="b", slot="0")] == 0
    # A counter without the _total suffix is written as Prometheus clients write one.
    assert s[key("llamacpp:n_tokens_max_total", model="b")] == 4096
    assert "# TYPE llamacpp:n_tokens_max_total counter" in headers
    # Only llamacpp:* families are re-exported; nothing failed, so the counter is empty.
    assert not [k for k in s if not k[0].startswith("llamacpp:")]
    assert f"# TYPE {FAILURES}_total counter" in headers


def test_a_child_that_fails_or_answers_garbage_is_skipped_and_counted() -> None:
    fetches, clock = Fetches(), Clock()
    context = Context(Process("a"), Process("bad"), Process("broken"))
    children = ChildMetrics(context, fetches, clock)
    out = rendered(children)
    fetches.answer("a", LLAMA_A)
    fetches.answer("bad", b"<html>not metrics</html>")
    fetches.answer("broken", UpstreamError("connection refused"))
    _, s = exposition(out.result)
    assert s[key("llamacpp:prompt_tokens_total", model="a")] == 12
    assert not [k for k in s if ("model", "bad") in k[1] and k[0] != f"{FAILURES}_total"]
    assert not [k for k in s if ("model", "broken") in k[1] and k[0] != f"{FAILURES}_total"]
    assert s[key(f"{FAILURES}_total", model="bad")] == 1
    assert s[key(f"{FAILURES}_total", model="broken")] == 1
    assert key(f"{FAILURES}_total", model="a") not in s
    # The count goes on across scrapes.
    again = rendered(children)
    fetches.answer("a", b"\xff\xfe not utf-8")
    fetches.answer("bad", LLAMA_B)
    fetches.answer("broken", LLAMA_B)
    _, s = exposition(again.result)
    assert children.failures() == {"a": 1, "bad": 1, "broken": 1}
    assert s[key("llamacpp:prompt_tokens_total", model="bad")] == 5
    assert key("llamacpp:prompt_tokens_total", model="a") not in s


def test_a_child_that_does_not_answer_is_given_up_after_the_timeout() -> None:
    fetches, clock = Fetches(), Clock()
    children = ChildMetrics(Context(Process("a"), Process("hung")), fetches, clock, timeout=1.0)
    out = rendered(children)
    fetches.answer("a", LLAMA_A)
    clock.advance(0.9)
    assert not out.called
    clock.advance(0.1)
    assert fetches.cancelled == ["http://127.0.0.1:1004/hung/metrics"]  # request aborted
    _, s = exposition(out.result)
    assert s[key("llamacpp:prompt_tokens_total", model="a")] == 12
    assert s[key(f"{FAILURES}_total", model="hung")] == 1
    assert not clock.getDelayedCalls()


def test_only_ready_children_are_asked() -> None:
    fetches, clock = Fetches(), Clock()
    context = Context(Process("a"), Process("starting", "starting"), Process("gone", "stopped"))
    out = rendered(ChildMetrics(context, fetches, clock))
    assert list(fetches.pending) == ["http://127.0.0.1:1001/a/metrics"]
    fetches.answer("a", LLAMA_A)
    _, s = exposition(out.result)
    assert {dict(k[1])["model"] for k in s} == {"a"}


def test_no_children_render_only_the_empty_failure_counter() -> None:
    out = rendered(ChildMetrics(Context(), Fetches(), Clock()))
    headers, s = exposition(out.result)
    assert s == {} and len(headers) == 2


def test_a_family_another_build_typed_differently_is_not_mixed_in() -> None:
    as_gauge = b"# TYPE llamacpp:prompt_tokens_total gauge\nllamacpp:prompt_tokens_total 9\n"
    (family,) = relabelled([("a", parse(LLAMA_A)), ("b", parse(as_gauge))])[:1]
    assert family.type == "counter"
    assert [(s.labels, s.value) for s in family.samples] == [({"model": "a"}, 12)]


def test_parse_refuses_what_is_not_prometheus_text() -> None:
    with pytest.raises(ValueError):
        parse(b'{"error": {"code": 501}}')


# -- fetch_body: what composition hands ChildMetrics -----------------------------------


def client_answering(code: int, body: bytes) -> tuple[UpstreamClient, CannedAgent]:
    agent = CannedAgent(CannedResponse(code, body, b"text/plain"))
    return UpstreamClient(Clock(), agent=agent), agent


@pytest_twisted.ensureDeferred
async def test_fetch_body_returns_a_200_body() -> None:
    client, agent = client_answering(200, LLAMA_A)
    body = await fetch_body(client, "http://127.0.0.1:9/metrics", limit=1 << 20, clock=Clock())
    assert body == LLAMA_A
    assert [(m, u) for m, u, _, _ in agent.sent] == [(b"GET", b"http://127.0.0.1:9/metrics")]


@pytest_twisted.ensureDeferred
async def test_fetch_body_refuses_another_status_and_a_body_over_the_limit() -> None:
    client, _ = client_answering(501, b'{"error": {"code": 501}}')
    with pytest.raises(UpstreamError, match="status 501"):
        await fetch_body(client, "http://127.0.0.1:9/metrics", limit=1 << 20, clock=Clock())
    client, _ = client_answering(200, LLAMA_A)
    with pytest.raises(BodyIncomplete, match="larger than 100 bytes"):
        await fetch_body(client, "http://127.0.0.1:9/metrics", limit=100, clock=Clock())
