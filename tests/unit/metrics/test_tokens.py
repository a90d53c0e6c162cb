"""Token counts in every API's shape, and inter-event gaps in their buckets."""

from __future__ import annotations

from typing import Any

import pytest

from server_core.metrics.tokens import GAP_BUCKETS, GapCounts, TokenCounts


@pytest.mark.parametrize(
    "payloads",
    [
        [{"usage": {"prompt_tokens": 7, "completion_tokens": 3}}],  # OpenAI
        [{"timings": {"prompt_n": 7, "predicted_n": 3}}],  # llama-server
        [{"type": "response.completed", "response": {"usage": {"input_tokens": 7,
                                                              "output_tokens": 3}}}],
        # Anthropic: the prompt in message_start, the output growing in message_delta.
        [{"type": "message_start", "message": {"usage": {"input_tokens": 7, "output_tokens": 1}}},
         {"type": "message_delta", "usage": {"output_tokens": 3}}],
    ],
)  # fmt: skip
def test_counts_in_every_shape(payloads: list[dict[str, Any]]) -> None:
    tokens = TokenCounts()
    for payload in payloads:
        tokens.note(payload)
    assert (tokens.prompt, tokens.generated) == (7, 3)


def test_nonsense_is_ignored_and_counts_never_shrink() -> None:
    tokens = TokenCounts()
    tokens.note({"usage": {"prompt_tokens": 5, "completion_tokens": 9}})
    tokens.note({"usage": {"prompt_tokens": True, "completion_tokens": "x"}, "timings": 3})
    tokens.note({"usage": {"prompt_tokens": 1, "completion_tokens": 2}})
    tokens.note({"response": "text", "message": None, "usage": [1]})
    assert (tokens.prompt, tokens.generated) == (5, 9)


def test_gaps_land_in_the_bucket_whose_bound_they_do_not_exceed() -> None:
    gaps = GapCounts()
    for t in (0.0, 0.005, 0.02, 0.02, 100.0):  # gaps 0.005, 0.015, 0.0, 99.98
        gaps.event_at(t)
    assert gaps.observed == 4
    assert gaps.counts[0] == 2  # 0.005 (on the bound) and 0.0
    assert gaps.counts[GAP_BUCKETS.index(0.025)] == 1
    assert gaps.counts[-1] == 1  # over the last bound: +Inf
    assert gaps.total == pytest.approx(100.0)
    merged = GapCounts()
    merged.merge(gaps)
    merged.merge(gaps)
    assert merged.observed == 8 and merged.total == pytest.approx(200.0)


def test_one_event_is_no_gap() -> None:
    gaps = GapCounts()
    gaps.event_at(3.0)
    assert gaps.observed == 0 and gaps.total == 0.0


def test_probe_failures_are_read_from_the_running_rows_at_scrape_time() -> None:
    from prometheus_client.parser import text_string_to_metric_families
    from twisted.internet.task import Clock

    from server_core.metrics import ServerMetrics
    from server_core.metrics.state import ModelStatus

    metrics = ServerMetrics(Clock())
    rows = [{"alias": "a", "in_flight": 0, "waiting": 0, "probe_misses": 2},
            {"alias": "queued-one", "in_flight": 0, "waiting": 1}]  # fmt: skip
    metrics.watch(ModelStatus(metrics, Clock(), ["a"]), lambda: rows)
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    assert found[("server_core_model_probe_failures_total", (("alias", "a"),))] == 2
    assert ("server_core_model_probe_failures_total", (("alias", "queued-one"),)) not in found
