"""The Ollama checks accept a right answer and reject each wrong one.

A scripted Ollama server (``planted_ollama``) answers as Ollama documents in mode
``ok`` and plants one violation per other mode: the checks named for the mode must
fail, all others pass; the ``NA_MODES`` are servers a check cannot judge (n/a).
"""

from __future__ import annotations

import pytest
import pytest_twisted

from harness.conformance import FAIL, NA, PASS, Report, run_conformance, select_checks
from tests.harness.conformance.planted_ollama import MODES, NA_MODES, planted_ollama
from tests.harness.conformance.support import names, reactor, table

OLLAMA = {c.name for c in select_checks(["ollama"])}


async def run(mode: str, only: list[str] | None = None, *, lenient: bool = False) -> Report:
    async with planted_ollama(mode) as url:
        # A short timeout: one mode keeps a stream open after its done line.
        return await run_conformance(
            url, "planted", reactor=reactor, only=only or ["ollama"], timeout=1, lenient=lenient
        )


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest_twisted.ensureDeferred
async def test_planted_violation_fails_exactly_its_checks(mode: str) -> None:
    report = await run(mode)
    assert names(report, FAIL) == MODES[mode], table(report)
    assert names(report, PASS) == OLLAMA - MODES[mode], table(report)


@pytest.mark.parametrize("mode", sorted(NA_MODES))
@pytest_twisted.ensureDeferred
async def test_what_a_check_cannot_judge_is_not_applicable(mode: str) -> None:
    report = await run(mode)
    assert names(report, NA) == NA_MODES[mode], table(report)
    assert names(report, PASS) == OLLAMA - NA_MODES[mode], table(report)


@pytest.mark.parametrize(
    ("mode", "check", "detail"),
    [
        ("version_word", "ollama.version", "'latest', not a dotted version"),
        ("tags_other_model", "ollama.tags", "'planted' is not listed"),
        ("tags_bad_size", "ollama.tags", "models[0].size is 'big'"),
        ("show_no_completion", "ollama.show.shape", "lack completion"),
        ("show_no_context", "ollama.show.context_length", "llama.context_length is None"),
        ("ps_no_expiry", "ollama.ps", "expires_at is None"),
        ("openai_errors", "ollama.errors.invalid_json", 'body is not {"error": "<text>"}'),
        ("unknown_model_200", "ollama.errors.unknown_model", "no HTTP error before the first"),
        ("after_done", "ollama.chat.stream.done_last", "is line 3, then 1 more"),
        ("error_line", "ollama.chat.stream.done_last", "is error"),
        ("no_done", "ollama.chat.stream.done_last", 'no "done": true in 3'),
        ("blank_line", "ollama.chat.stream.framing", "not a JSON object: ''"),
        ("sse", "ollama.chat.stream.framing", "not application/x-ndjson"),
        ("hang", "ollama.chat.stream.done_last", "did not end after"),
        ("null_content", "ollama.chat.stream.framing", "message.content is None"),
        ("no_eval_duration", "ollama.chat.stream.timings", "eval_duration is None"),
        ("bad_done_reason", "ollama.chat.stream.timings", "done_reason is 'finished'"),
        ("text_mismatch", "ollama.chat.stream_matches_nonstream", "!= whole"),
        ("whole_not_done", "ollama.chat.nonstream", "done is False"),
        ("gen_no_response", "ollama.generate.nonstream", "response is None"),
        ("embed_unequal", "ollama.embed", "not two equal lists"),
        ("embed_openai_refusal", "ollama.embed", 'body is not {"error"'),
    ],
)
@pytest_twisted.ensureDeferred
async def test_failure_detail_says_what_is_wrong(mode: str, check: str, detail: str) -> None:
    report = await run(mode, [check])
    assert detail in report.result(check).detail, table(report)


@pytest_twisted.ensureDeferred
async def test_right_answers_pass_with_informative_details() -> None:
    report = await run("ok")
    assert report.result("ollama.version").detail == "version 0.12.3"
    assert report.result("ollama.tags").detail == "1 model(s)"
    assert report.result("ollama.show.context_length").detail == "llama.context_length 4096"
    assert report.result("ollama.ps").detail == "1 loaded, planted listed"
    assert report.result("ollama.chat.stream.done_last").detail == (
        '"done": true is line 4 of 4, body ended'
    )
    assert report.result("ollama.chat.stream.timings").detail == "stop, 3 tokens in 9000 ns"
    assert (
        "same text (18 characters)"
        in report.result("ollama.generate.stream_matches_nonstream").detail
    )
    assert report.result("ollama.embed").detail == "2 vectors of 2"


@pytest_twisted.ensureDeferred
async def test_lenient_accepts_other_4xx_but_never_openai_shaped_errors() -> None:
    report = await run("openai_errors", ["ollama.errors"], lenient=True)
    assert names(report, FAIL) == {c for c in OLLAMA if c.startswith("ollama.errors")}
