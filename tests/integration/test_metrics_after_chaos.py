"""A scrape after a chaos run counts the stream endings the chaos report counts.

The chaos runner (``harness chaos --target``) sends a seeded mix of faulty requests in
every dialect to server_core in front of the fake llama-server and judges what each
client saw; ``/metrics`` must then show exactly as many complete, error-event,
HTTP-error and client-gone endings: the honesty metric agrees with the clients.
"""

from __future__ import annotations

import collections

import pytest
import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import deferLater

from harness.chaos import ChaosOptions, run_chaos
from harness.chaos.kinds import DIALECT_NAMES
from tests.integration.stack import reactor, stack

pytestmark = pytest.mark.timeout(120)

# What a client's outcome is, as the server counts the ending.
_KIND_OF_OUTCOME = {
    "done": "complete",
    "final_event": "complete",  # an upstream's honest response.failed, relayed whole
    "error_event": "error_event",
    "http_error": "http_error",
    "disconnected": "client_gone",
}
# The kinds a target run can judge and the fake ends by itself (no crash, no netfault).
_KINDS = ("clean", "ttft", "token_delay", "crlf", "duplicate", "malformed", "stall", "close",
          "drop", "reset", "error", "legacy_error", "status", "disconnect", "ping")  # fmt: skip


async def scrape(url: str) -> dict[str, float]:
    response = await treq.get(url + "/metrics", persistent=False)
    text = (await treq.content(response)).decode()
    counts: dict[str, float] = collections.Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "server_core_endings_total":
                counts[sample.labels["kind"]] += sample.value
            elif sample.name == "server_core_http_in_flight":
                counts["in_flight"] = sample.value
    return counts


@pytest_twisted.ensureDeferred
async def test_a_scrape_after_chaos_shows_the_endings_the_chaos_report_shows() -> None:
    timeouts = "  upstream: {idle_timeout: 1.0, header_timeout: 2.0}\n"
    async with stack(server_yaml=timeouts) as s:
        options = ChaosOptions(
            target=s.url,
            model="fake",
            requests=240,
            concurrency=16,
            seed=15,
            kinds=_KINDS,
            idle_timeout=1.0,
            header_timeout=2.0,
            dialects=DIALECT_NAMES,  # all of them, without the probe's extra requests
        )
        report = await run_chaos(options, reactor, log=lambda line: None)
        assert report.setup_error is None and report.n_violations == 0, report.to_json()
        seen = collections.Counter(r.result.outcome for r in report.records)
        assert set(seen) <= set(_KIND_OF_OUTCOME), seen
        expected = collections.Counter()
        for outcome, n in seen.items():
            expected[_KIND_OF_OUTCOME[outcome]] += n
        # Each kind is in the mix: the comparison is not of empty counts.
        assert all(expected[kind] > 0 for kind in ("complete", "error_event", "http_error"))

        # A disconnect is counted when the server notices it: wait until nothing but the
        # scrape itself is in flight.
        for _ in range(400):
            counts = await scrape(s.url)
            if counts["in_flight"] <= 1:
                break
            await deferLater(reactor, 0.05, lambda: None)
        got = {kind: counts[kind] for kind in ("complete", "error_event", "http_error",
                                              "client_gone")}  # fmt: skip
        # Endings that broke or were refused: exactly what the clients saw.
        for kind in ("error_event", "http_error"):
            assert got[kind] == expected[kind], (got, seen)
        # A client that leaves on purpose after the server wrote its last byte left a
        # complete response behind: the server counts it complete, the client
        # "disconnected". Together they agree, and no more left than the clients say.
        assert (
            got["complete"] + got["client_gone"] == expected["complete"] + expected["client_gone"]
        ), (got, seen)
        assert 0 < got["client_gone"] <= expected["client_gone"], (got, seen)
