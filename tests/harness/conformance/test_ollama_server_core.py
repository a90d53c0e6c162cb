"""The Ollama checks against server_core in front of the fake llama-server: every check
passes for a managed model with a GGUF file; an external model (no file, never loaded by
server_core) leaves only what cannot be known n/a."""

from __future__ import annotations

from pathlib import Path

import pytest_twisted

from harness.conformance import FAIL, NA, PASS, run_conformance, select_checks
from tests.harness.conformance.support import EXTERNAL_NA, names, reactor, table
from tests.integration.stack import stack
from tests.integration.test_managed import managed
from tests.unit.ollama.gguf_files import write_gguf

OLLAMA = {c.name for c in select_checks(["ollama"])}


@pytest_twisted.ensureDeferred
async def test_a_managed_model_passes_every_ollama_check(tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "tiny.gguf")
    aliases = {"tiny": ["-c", "2048"], "emb": ["--embeddings"]}
    async with managed(tmp_path, aliases, model=str(model), ttl=120) as m:
        report = await run_conformance(m.url, "tiny", reactor=reactor, only=["ollama"])
        embed = await run_conformance(m.url, "emb", reactor=reactor, only=["ollama.embed"])
    # The chat model does not embed (its refusal is Ollama-shaped); the embedding one does.
    assert names(report, PASS) == OLLAMA - {"ollama.embed"}, table(report)
    assert names(report, NA) == {"ollama.embed"}, table(report)
    assert names(embed, PASS) == {"ollama.embed"}, table(embed)
    assert report.result("ollama.show.context_length").detail == "llama.context_length 2048"
    assert report.result("ollama.ps").detail == "1 loaded, tiny listed"
    assert report.result("ollama.errors.unknown_model").detail.startswith("404: ")


@pytest_twisted.ensureDeferred
async def test_an_external_model_passes_all_it_can(tmp_path: Path) -> None:
    async with stack() as s:
        report = await run_conformance(s.url, "fake", reactor=reactor, only=["ollama"])
    assert names(report, FAIL) == set(), table(report)
    assert names(report, NA) == EXTERNAL_NA, table(report)
    assert "same text" in report.result("ollama.chat.stream_matches_nonstream").detail
