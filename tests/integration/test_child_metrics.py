"""The managed children's ``llamacpp:*`` metrics on server_core's own ``/metrics``: fake
llama-server children spawned like real ones, started with ``--metrics``, scraped for real."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted

from harness.client import stream_request
from tests.integration.test_managed import ask, managed
from tests.integration.test_observability import get, key, samples

pytestmark = pytest.mark.timeout(60)

FAILURES = "server_core_child_metrics_scrape_failures_total"


def llamacpp_models(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> set[str]:
    """The ``model`` labels of every re-exported child sample."""
    return {dict(labels)["model"] for name, labels in scrape if name.startswith("llamacpp:")}


@pytest_twisted.ensureDeferred
async def test_a_request_shows_in_its_childs_metrics_and_a_stopped_child_shows_nothing(
    tmp_path: Path,
) -> None:
    async with managed(tmp_path, {"a": [], "b": []}, max_loaded=2) as m:
        status, headers, text = await get(m.url + "/metrics")
        assert status == 200 and headers["content-type"][0].startswith("text/plain")
        assert llamacpp_models(samples(text)) == set()  # nothing runs yet

        assert (await ask(m, "a", max_tokens=6)).outcome == "done"
        assert "--metrics" in m.context.process_for("a").argv
        text = (await get(m.url + "/metrics"))[2]
        scrape = samples(text)
        predicted = scrape[key("llamacpp:tokens_predicted_total", model="a")]
        # The child counted what server_core relayed from it for that one request.
        assert predicted == scrape[key("server_core_tokens_total", model="a", direction="out")]
        assert 0 < predicted <= 6
        assert scrape[key("llamacpp:prompt_tokens_total", model="a")] > 0
        assert scrape[key("llamacpp:requests_processing", model="a")] == 0
        assert text.count(b"# TYPE llamacpp:tokens_predicted_total counter") == 1
        assert llamacpp_models(scrape) == {"a"}

        assert (await ask(m, "b", max_tokens=3)).outcome == "done"
        assert (await ask(m, "a", max_tokens=6)).outcome == "done"
        text = (await get(m.url + "/metrics"))[2]
        scrape = samples(text)
        assert llamacpp_models(scrape) == {"a", "b"}
        assert text.count(b"# TYPE llamacpp:tokens_predicted_total counter") == 1  # once
        assert scrape[key("llamacpp:tokens_predicted_total", model="a")] > predicted
        assert 0 < scrape[key("llamacpp:tokens_predicted_total", model="b")] <= 3

        unload = await stream_request(m.url + "/unload", {"alias": "a"}, timeout=10)
        assert unload.json_body == {"unloaded": ["a"]}
        scrape = samples((await get(m.url + "/metrics"))[2])
        assert llamacpp_models(scrape) == {"b"}  # the stopped child left nothing behind
        assert not [k for k in scrape if k[0] == FAILURES]  # and no scrape failed


@pytest_twisted.ensureDeferred
async def test_child_metrics_off_starts_children_without_metrics(tmp_path: Path) -> None:
    async with managed(tmp_path, {"a": []}, child_metrics="false") as m:
        assert (await ask(m, "a")).outcome == "done"
        assert "--metrics" not in m.context.process_for("a").argv
        text = (await get(m.url + "/metrics"))[2]
        assert b"llamacpp:" not in text and FAILURES.encode() not in text
        assert samples(text)[key("server_core_model_starts_total", alias="a")] == 1
