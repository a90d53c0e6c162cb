"""Observability over real sockets: what /metrics, /ready, /api/events and /v1/models say
after real requests through server_core to the fake llama-server."""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.web.client import HTTPConnectionPool

from harness.client import stream_request
from server_core.sse.codec import Event
from tests.integration.stack import reactor, stack
from tests.integration.test_managed import ask, managed
from tests.polling import until

pytestmark = pytest.mark.timeout(60)

CHAT = "/v1/chat/completions"


def chat_body(stream: bool = True, n: int = 8, **extra: Any) -> dict[str, Any]:
    return {
        "model": "fake",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": stream,
        "max_tokens": n,
        **extra,
    }


async def get(url: str, **kw: Any) -> tuple[int, dict[str, list[str]], bytes]:
    response = await treq.get(url, persistent=False, **kw)
    body = await treq.content(response)
    headers = {
        k.decode().lower(): [v.decode() for v in vs]
        for k, vs in response.headers.getAllRawHeaders()
    }
    return response.code, headers, body


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape: (name, labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    """The key of one sample in ``samples``."""
    return name, frozenset(labels.items())


def endings(scrape: dict[Any, float], model: str = "fake") -> dict[tuple[str, str], float]:
    """(kind, cause) -> how many of this model's requests ended so (streams or not)."""
    counts: dict[tuple[str, str], float] = {}
    for (name, labels), value in scrape.items():
        label = dict(labels)
        if name == "server_core_endings_total" and label["model"] == model:
            key = (label["kind"], label["cause"])
            counts[key] = counts.get(key, 0.0) + value
    return counts


def endings_now(service: Any) -> dict[tuple[str, str], float]:
    """The endings as a scrape would show them now, read in-process (for polling)."""
    return endings(samples(service.metrics.render()))


@pytest_twisted.ensureDeferred
async def test_a_complete_and_a_reset_stream_are_one_complete_and_one_error_event() -> None:
    async with stack() as s:
        complete = await stream_request(s.url + CHAT, chat_body(), timeout=10)
        broken = await stream_request(
            s.url + CHAT, chat_body(), headers={"X-Fault": "reset_after=2"}, timeout=10
        )
        assert complete.outcome == "done", complete.summary()
        assert broken.outcome == "error_event", broken.summary()
        status, headers, text = await get(s.url + "/metrics")
        assert status == 200 and headers["content-type"][0].startswith("text/plain")
        scrape = samples(text)
        assert endings(scrape) == {("complete", ""): 1.0, ("error_event", "upstream_reset"): 1.0}
        assert (
            scrape[key("server_core_requests_total", route=CHAT, model="fake", status="200")] == 2
        )
        assert scrape[key("server_core_time_to_first_event_seconds_count", model="fake")] == 2
        # Each reply names the node and the alias that served it.
        assert complete.headers["x-served-by"] == [f"{s.config.server.node_name}/fake"]


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        ("close_after=2", "upstream_closed"),
        ("drop_after=2", "upstream_reset"),
        ("error_after=2", "upstream_error"),
        ("legacy_error_after=2", "upstream_error"),
        ("malformed_after=2", "malformed"),
        ("stall_after=2", "stall"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_each_broken_stream_is_counted_with_its_cause(fault: str, cause: str) -> None:
    async with stack(server_yaml="  upstream: {idle_timeout: 0.3}\n") as s:
        result = await stream_request(
            s.url + CHAT, chat_body(), headers={"X-Fault": fault}, timeout=10
        )
        assert result.outcome == "error_event", result.summary()
        _, _, text = await get(s.url + "/metrics")
        assert endings(samples(text)) == {("error_event", cause): 1.0}


@pytest_twisted.ensureDeferred
async def test_client_gone_and_http_error_endings() -> None:
    async with stack() as s:
        left = await stream_request(
            s.url + CHAT,
            chat_body(n=40, ignore_eos=True),
            headers={"X-Fault": "token_delay=20ms"},
            disconnect_after=2,
            timeout=10,
        )
        assert left.outcome == "disconnected", left.summary()
        refused = await stream_request(
            s.url + CHAT, chat_body(), headers={"X-Fault": "status=500"}, timeout=10
        )
        assert refused.outcome == "http_error", refused.summary()
        # The client's leaving reaches the server a moment after the client closes.
        await until(lambda: ("client_gone", "") in endings_now(s.service))
        _, _, text = await get(s.url + "/metrics")
        expected = {("client_gone", ""): 1.0, ("http_error", "upstream_status"): 1.0}
        assert endings(samples(text)) == expected
        gone = key(
            "server_core_endings_total", model="fake", stream="true", kind="client_gone", cause=""
        )
        assert samples(text)[gone] == 1.0


@pytest_twisted.ensureDeferred
async def test_a_stream_the_drain_ends_is_an_error_event_caused_by_the_drain() -> None:
    async with stack(server_yaml="  drain_timeout: 0.2") as s:
        started: defer.Deferred[None] = defer.Deferred()

        def on_event(event: Event, t: float) -> None:
            if not started.called:
                started.callback(None)

        slow = defer.ensureDeferred(
            stream_request(
                s.url + CHAT,
                chat_body(n=100, ignore_eos=True),
                headers={"X-Fault": "token_delay=50ms"},
                on_event=on_event,
                timeout=20,
            )
        )
        await started
        await s.service.stopService()
        assert (await slow).outcome == "error_event"
        assert endings_now(s.service) == {("error_event", "drain"): 1.0}


@pytest_twisted.ensureDeferred
async def test_metrics_need_the_api_key_unless_public() -> None:
    keys = "  api_keys: [sekrit]\n"
    async with stack(server_yaml=keys) as s:
        assert (await get(s.url + "/metrics"))[0] == 401
        status, _, text = await get(s.url + "/metrics", headers={"Authorization": "Bearer sekrit"})
        assert status == 200 and b"server_core_requests_total" in text
    async with stack(server_yaml=keys + "  metrics_public: true\n") as s:
        assert (await get(s.url + "/metrics"))[0] == 200
        # Only the metrics are public: the models still need the key.
        assert (await get(s.url + "/v1/models"))[0] == 401


@pytest_twisted.ensureDeferred
async def test_ready_is_200_then_503_while_draining() -> None:
    async with stack(server_yaml="  drain_timeout: 5") as s:
        pool = HTTPConnectionPool(reactor, persistent=True)
        try:
            first = await treq.get(s.url + "/ready", pool=pool)
            assert first.code == 200 and json.loads(await treq.content(first)) == {
                "status": "ready"
            }
            unknown = await treq.get(s.url + "/ready?model=nope", pool=pool)
            assert unknown.code == 404
            await treq.content(unknown)
            remote = await treq.get(s.url + "/ready?model=fake", pool=pool)
            assert (
                remote.code == 200 and remote.headers.getRawHeaders(b"x-server-core-ready") is None
            )
            await treq.content(remote)
            started: defer.Deferred[None] = defer.Deferred()

            def on_event(event: Event, t: float) -> None:
                if not started.called:
                    started.callback(None)

            in_flight = defer.ensureDeferred(
                stream_request(
                    s.url + CHAT,
                    chat_body(n=10),
                    headers={"X-Fault": "token_delay=50ms"},
                    on_event=on_event,
                    timeout=20,
                )
            )
            await started
            stopping = s.service.stopService()
            during = await treq.get(s.url + "/ready", pool=pool)
            assert during.code == 503
            assert json.loads(await treq.content(during)) == {"status": "draining"}
            assert (await in_flight).outcome == "done"
            await stopping
        finally:
            await pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_a_managed_start_is_seen_on_models_ready_events_and_metrics(tmp_path: Path) -> None:
    async with managed(tmp_path, {"a": ["--fault", "load_delay=200ms"]}) as m:
        _, _, listed = await get(m.url + "/v1/models")
        (entry,) = json.loads(listed)["data"]
        assert entry["id"] == "a" and entry["status"] == {"value": "unloaded"}
        status, headers, _ = await get(m.url + "/ready?model=a")
        assert status == 200 and headers["x-server-core-ready"] == ["after-start"]

        seen: list[dict[str, Any]] = []
        loaded: defer.Deferred[None] = defer.Deferred()

        def on_event(event: Event, t: float) -> None:
            data = json.loads(event.data or "null")
            seen.append(data)
            if data == {"type": "state", "alias": "a", "status": "loaded", **_start(data)}:
                if not loaded.called:
                    loaded.callback(None)

        events = defer.ensureDeferred(
            stream_request(m.url + "/api/events", None, method="GET", on_event=on_event, timeout=30)
        )
        await until(lambda: bool(seen))  # the snapshot: the stream is subscribed
        assert seen[0] == {"type": "state", "alias": "a", "status": "unloaded"}
        result = await ask(m, "a")
        assert result.outcome == "done", result.summary()
        await loaded
        events.cancel()
        with pytest.raises(defer.CancelledError):
            await events
        kinds = [(e["type"], e.get("status")) for e in seen if e["type"] == "state"]
        assert kinds == [("state", "unloaded"), ("state", "loading"), ("state", "loaded")]
        _, _, listed = await get(m.url + "/v1/models")
        assert json.loads(listed)["data"][0]["status"] == {"value": "loaded"}
        status, headers, _ = await get(m.url + "/ready?model=a")
        assert status == 200 and "x-server-core-ready" not in headers
        scrape = samples((await get(m.url + "/metrics"))[2])
        alias = frozenset({("alias", "a")})
        assert scrape[("server_core_model_starts_total", alias)] == 1.0
        assert scrape[("server_core_model_start_seconds_count", alias)] == 1.0
        assert scrape[("server_core_model_start_seconds_sum", alias)] >= 0.2
        loaded_state = frozenset({("alias", "a"), ("state", "loaded")})
        assert scrape[("server_core_model_state", loaded_state)] == 1.0
        assert scrape[("server_core_queue_wait_seconds_count", alias)] == 1.0


def _start(data: dict[str, Any]) -> dict[str, Any]:
    """The start time a ``loaded`` event carries, whatever it was."""
    return {"start_seconds": data["start_seconds"]} if "start_seconds" in data else {}


@pytest.mark.parametrize(("setting", "lines"), [("", 0), ("  access_log: true\n", 1)])
@pytest_twisted.ensureDeferred
async def test_the_access_log_is_off_unless_asked_for(setting: str, lines: int) -> None:
    async with stack(server_yaml=setting) as s:
        written = io.StringIO()
        s.service.site._logFile = written  # where Site.log writes, once started
        assert (await get(s.url + "/health"))[0] == 200
        await until(lambda: ("/health", "", "200") in _requests_now(s.service))
        assert written.getvalue().count("GET /health") == lines


def _requests_now(service: Any) -> set[tuple[str, str, str]]:
    scrape = samples(service.metrics.render())
    return {
        (label["route"], label["model"], label["status"])
        for (name, labels), _ in scrape.items()
        if name == "server_core_requests_total"
        for label in [dict(labels)]
    }


async def post_json(url: str, body: Any) -> tuple[int, Any]:
    response = await treq.post(url, json=body, persistent=False)
    return response.code, json.loads(await treq.content(response))


@pytest_twisted.ensureDeferred
async def test_load_starts_a_model_ahead_of_its_requests(tmp_path: Path) -> None:
    async with managed(tmp_path, {"a": ["--fault", "load_delay=200ms"]}) as m:
        assert m.context.running() == []
        status, answer = await post_json(m.url + "/load", {"alias": "a"})
        assert status == 200 and answer == {"loaded": "a", "status": {"value": "loaded"}}
        (row,) = m.context.running()
        assert row["state"] == "ready" and row["in_flight"] == 0  # the lease was given back
        result = await ask(m, "a")
        assert result.outcome == "done", result.summary()
        assert m.context.starts == 1  # the request found it loaded
        status, answer = await post_json(m.url + "/load", {"alias": "a"})
        assert status == 200 and m.context.starts == 1  # loading a loaded model is a no-op
        status, answer = await post_json(m.url + "/load", {"alias": "nope"})
        assert status == 404 and answer["error"]["code"] == "model_not_found"
        status, answer = await post_json(m.url + "/load", {"alias": 3})
        assert status == 400 and answer["error"]["param"] == "alias"


@pytest_twisted.ensureDeferred
async def test_load_without_managed_models_is_a_404() -> None:
    async with stack() as s:
        status, answer = await post_json(s.url + "/load", {"alias": "fake"})
        assert status == 404 and answer["error"]["code"] == "no_managed_models"


@pytest_twisted.ensureDeferred
async def test_preload_starts_its_models_when_the_server_starts(tmp_path: Path) -> None:
    async with managed(tmp_path, {"a": [], "b": []}, preload='["b"]', max_loaded=2) as m:
        await until(lambda: [r["state"] for r in m.context.running()] == ["ready"], timeout=20)
        assert [r["alias"] for r in m.context.running()] == ["b"]
        assert m.context.starts == 1


# (X-Fault, disconnect_after) -> the outcome the client sees; the mix a chaos run draws.
_CHAOS_MIX = [
    (None, None),
    ("reset_after=2", None),
    ("close_after=3", None),
    ("drop_after=1", None),
    ("error_after=2", None),
    ("malformed_after=1", None),
    ("stall_after=2", None),
    ("status=503", None),
    ("token_delay=10ms", 2),
]
# The client's outcome -> the ending kind the server must have counted.
_KIND_OF_OUTCOME = {
    "done": "complete",
    "error_event": "error_event",
    "http_error": "http_error",
    "disconnected": "client_gone",
}


@pytest_twisted.ensureDeferred
async def test_a_scrape_after_a_seeded_fault_mix_counts_what_the_clients_saw() -> None:
    rng = random.Random(15)
    plan = [rng.choice(_CHAOS_MIX) for _ in range(40)]
    async with stack(server_yaml="  upstream: {idle_timeout: 0.3}\n") as s:
        results = await defer.gatherResults(
            [
                defer.ensureDeferred(
                    stream_request(
                        s.url + CHAT,
                        chat_body(n=12, ignore_eos=True),
                        headers={"X-Fault": fault} if fault else None,
                        disconnect_after=leave,
                        timeout=20,
                    )
                )
                for fault, leave in plan
            ]
        )
        seen = Counter(_KIND_OF_OUTCOME[r.outcome] for r in results)
        assert len(seen) == 4  # the mix reached every kind of ending

        def counted() -> Counter[str]:
            kinds: Counter[str] = Counter()
            for (kind, _), n in endings_now(s.service).items():
                kinds[kind] += int(n)
            return kinds

        # The server hears of a client's leaving a moment after the client closed.
        await until(lambda: counted() == seen, timeout=10)
        _, _, text = await get(s.url + "/metrics")
        scraped: Counter[str] = Counter()
        for (kind, _), n in endings(samples(text)).items():
            scraped[kind] += int(n)
        assert scraped == seen


@pytest_twisted.ensureDeferred
async def test_a_model_request_refused_before_any_model_answered_still_counts_its_ending() -> None:
    async with stack() as s:
        unknown = await stream_request(s.url + CHAT, {**chat_body(), "model": "nope"}, timeout=10)
        invalid = await stream_request(s.url + CHAT, {**chat_body(), "messages": 3}, timeout=10)
        assert (unknown.status, invalid.status) == (404, 400)
        assert (await get(s.url + "/v1/models"))[0] == 200  # not a model's request
        assert endings_now(s.service) == {}
        assert endings_now_for(s.service, "") == {("http_error", ""): 2.0}


def endings_now_for(service: Any, model: str) -> dict[tuple[str, str], float]:
    return endings(samples(service.metrics.render()), model)


@pytest_twisted.ensureDeferred
async def test_ready_tells_which_models_exist_only_to_key_holders() -> None:
    async with stack(server_yaml="  api_keys: [sekrit]\n") as s:
        assert (await get(s.url + "/ready"))[0] == 200
        assert (await get(s.url + "/ready?model=fake"))[0] == 401
        assert (await get(s.url + "/ready?model=nope"))[0] == 401
        key_header = {"Authorization": "Bearer sekrit"}
        assert (await get(s.url + "/ready?model=fake", headers=key_header))[0] == 200
        assert (await get(s.url + "/ready?model=nope", headers=key_header))[0] == 404


@pytest_twisted.ensureDeferred
async def test_json_logs_write_one_line_per_finished_model_request(capsys: Any) -> None:
    async with stack(server_yaml="  json_logs: true\n") as s:
        await stream_request(s.url + CHAT, chat_body(), timeout=10)
        await stream_request(s.url + CHAT, chat_body(), headers={"X-Fault": "reset_after=2"})
        assert (await get(s.url + "/health"))[0] == 200  # not a model's request: no line
        await until(lambda: sum(endings_now(s.service).values()) == 2)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert [(e["route"], e["model"], e["ending"], e["cause"]) for e in lines] == [
        (CHAT, "fake", "complete", ""),
        (CHAT, "fake", "error_event", "upstream_reset"),
    ]
    assert all(e["status"] == 200 and e["ttft"] <= e["duration"] for e in lines)
    assert lines[0]["node"] == s.config.server.node_name and lines[0]["alias"] == "fake"


@pytest.mark.parametrize(
    ("fault", "kind", "cause"),
    [(None, "complete", ""), ("reset_after=2", "error_event", "upstream_reset"),
     ("malformed_after=2", "error_event", "malformed")],
)  # fmt: skip
@pytest_twisted.ensureDeferred
async def test_ollama_streams_are_counted_like_every_other(
    fault: str | None, kind: str, cause: str
) -> None:
    async with stack() as s:
        body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"content-type": "application/json", **({"X-Fault": fault} if fault else {})}
        response = await treq.post(
            s.url + "/api/chat", json.dumps(body).encode(), headers=headers, persistent=False
        )
        lines = [json.loads(line) for line in (await treq.content(response)).splitlines()]
        assert ("error" in lines[-1]) is (kind == "error_event"), lines
        served = response.headers.getRawHeaders(b"x-served-by")
        assert served == [f"{s.config.server.node_name}/fake".encode()]
        _, _, text = await get(s.url + "/metrics")
        scrape = samples(text)
        assert endings(scrape) == {(kind, cause): 1.0}
        assert scrape[key("server_core_requests_total", route="/api/chat", model="fake",
                          status="200")] == 1  # fmt: skip


def _tokens(scrape: dict[Any, float], direction: str) -> float:
    return scrape.get(key("server_core_tokens_total", model="fake", direction=direction), 0.0)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (CHAT, {"model": "fake", "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 6, "stream_options": {"include_usage": True}}),
        ("/v1/responses", {"model": "fake", "input": "hi", "max_output_tokens": 6}),
        ("/v1/messages", {"model": "fake", "max_tokens": 6,
                          "messages": [{"role": "user", "content": "hi"}]}),
    ],
)  # fmt: skip
@pytest_twisted.ensureDeferred
async def test_tokens_and_inter_event_gaps_are_counted_in_every_dialect(
    path: str, body: dict[str, Any]
) -> None:
    async with stack() as s:
        whole = await stream_request(s.url + path, {**body, "stream": False}
                                     if path != CHAT else {k: v for k, v in body.items()
                                                           if k != "stream_options"},
                                     timeout=10)  # fmt: skip
        assert whole.outcome == "done", whole.summary()
        stream = await stream_request(s.url + path, {**body, "stream": True}, timeout=10)
        assert stream.outcome == "done", stream.summary()
        _, _, text = await get(s.url + "/metrics")
        scrape = samples(text)
        usage = whole.json_body.get("usage")
        prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
        generated = usage.get("completion_tokens", usage.get("output_tokens"))
        assert prompt > 0 and generated > 0
        # The whole answer and the stream asked the same, so each is counted twice.
        assert _tokens(scrape, "in") == 2 * prompt
        assert _tokens(scrape, "out") == 2 * generated
        gaps = scrape[key("server_core_inter_event_gap_seconds_count", model="fake")]
        relayed = stream.n_events - (1 if path == CHAT else 0)  # chat's [DONE] is no event
        assert relayed > 3 and gaps == relayed - 1
        assert scrape[key("server_core_inter_event_gap_seconds_bucket", model="fake",
                          le="+Inf")] == gaps  # fmt: skip
