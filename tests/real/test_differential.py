"""Differential conformance on the real llama-server: server_core in front of it against
the very same llama-server asked directly.

Both runs send the same checks to the same process (the alias's llama-server, which
server_core started), so every difference in the results is server_core's doing. Each
one must be a documented, intended difference (``DIFFERS`` below, one reason each; the
table with both details is docs/differential.md): a new difference, or a documented one
gone, fails this test. All the suite's checks run: the model list, chat, completions,
errors and routes, robustness, Responses, Anthropic Messages and llama.cpp's native
routes (``auth.*`` are n/a on both: neither side has an API key).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytest_twisted

from harness.client import stream_request
from harness.conformance import DiffReport, run_differential_checks
from harness.conformance.checks.registry import CHECKS
from tests.integration.test_managed import managed
from tests.real.test_real import upstream_kwargs

# Two runs of 72 checks: under a minute on a 2-core machine, a few on a busy one.
pytestmark = pytest.mark.timeout(300)

# --ctx-size 4096 -np 2: 2048 tokens a slot, room for every check's prompt. One thread:
# llama.cpp's worker threads spin, and on a busy 2-core machine two of them crawl.
FLAGS = ["--ctx-size", "4096", "-np", "2", "-t", "1"]

# Where server_core means to differ from llama-server: (check, why). Target passes,
# llama-server fails, in every one.
DIFFERS: dict[str, str] = {
    "models.retrieve": "llama-server has no GET /v1/models/{id} (404 File Not Found); "
    "server_core answers it from its aliases",
    "errors.empty_messages": "llama-server generates from an empty prompt for messages: []; "
    "server_core refuses it with a 400",
    "errors.invalid_json": "llama-server answers a JSON parse error with a 500; server_core "
    "with a 400",
    "errors.unknown_model": "llama-server's one model answers any model name; server_core "
    "answers a name it has no alias for with 404 model_not_found",
    "messages.errors.missing_messages": "llama-server throws on a Messages body without "
    "messages: a 500; server_core validates it first, a 400",
    "messages.errors.messages_type": 'llama-server accepts messages: "hello" (200); '
    "server_core refuses it with a 400",
    "messages.errors.shape": "llama-server's Messages errors are OpenAI-shaped "
    '({"error": {...}}); server_core answers Anthropic routes in Anthropic\'s shape',
}
# Differences that depend on timing, not on server_core alone: allowed, not required.
MAY_DIFFER: dict[str, str] = {
    "chat.stream.created_model": "llama-server stamps each chunk with the current second, so "
    "created changes when a stream crosses a second (always on a loaded machine); "
    "server_core keeps the first chunk's created for the whole stream",
}


async def differential(tmp_path: Path, llama_server: str, gguf: str) -> DiffReport:
    """The differential run: server_core's URL against its alias's llama-server's."""
    real = upstream_kwargs("real", llama_server, gguf)
    # A long ttl: the reference run does not go through server_core, whose idle timer
    # would otherwise stop the llama-server under it.
    async with managed(tmp_path, {"m": FLAGS}, ttl=3600, **real) as m:
        warm = await stream_request(
            m.url + "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
            timeout=120,
        )
        assert warm.outcome == "done", warm.summary()
        (entry,) = m.context.running()
        direct = f"http://127.0.0.1:{entry['port']}"
        # Every check but Ollama's: llama-server does not speak Ollama's API (server_core
        # translates it), so there is nothing of its own for those to compare.
        names = [c.name for c in CHECKS if not c.name.startswith("ollama.")]
        diff = await run_differential_checks(
            m.url, direct, "m", allow=[*DIFFERS, *MAY_DIFFER], timeout=120, only=names
        )
        assert m.context.starts == 1  # both runs saw the one llama-server
        return diff


def _table(diff: DiffReport) -> str:
    return diff.format_table(width=160)


@pytest_twisted.ensureDeferred
async def test_server_core_differs_from_the_llama_server_under_it_only_as_documented(
    tmp_path: Path, llama_server: str, gguf: str
) -> None:
    diff = await differential(tmp_path, llama_server, gguf)
    differing = {d.name for d in diff.diffs}
    assert diff.ok, _table(diff)
    assert set(DIFFERS) <= differing, _table(diff)  # each documented difference still is one
    for d in diff.diffs:
        assert (d.target_result, d.reference_result) == ("pass", "fail"), _table(diff)
    # Beyond the differences, server_core passes what llama-server passes.
    target_failed = [r.name for r in diff.target.failed]
    assert target_failed == [], _table(diff) + "\n" + diff.target.format_table()
    report_row(diff)


def report_row(diff: DiffReport) -> None:
    """What docs/differential.md quotes: printed (see it with ``-s``), and the whole JSON
    report written to ``$DIFFERENTIAL_JSON`` when that names a file."""
    print()
    print(_table(diff))
    print("target", diff.target.counts(), "reference", diff.reference.counts())
    out = os.environ.get("DIFFERENTIAL_JSON")
    if out:
        Path(out).write_text(diff.to_json(), encoding="utf-8")
