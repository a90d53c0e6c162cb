"""The check registry, and that each check discriminates.

A tiny twisted.web server plants one violation at a time; the check that looks for it
must fail and its neighbours must still pass.
"""

from __future__ import annotations

import re

import pytest
import pytest_twisted

from harness.conformance import CHECKS, FAIL, PASS, run_conformance, select_checks
from harness.conformance.checks import Context, check, normalise_base
from tests.harness.conformance.support import REPO, names, planted, reactor, table

# -- the registry ----------------------------------------------------------------------------


def test_registry_has_at_least_30_named_described_checks() -> None:
    assert len(CHECKS) >= 30
    all_names = [c.name for c in CHECKS]
    assert len(set(all_names)) == len(all_names)
    for c in CHECKS:
        assert c.description and "." in c.name and c.name == c.name.strip()


def test_docs_name_every_check() -> None:
    doc = (REPO / "docs" / "conformance.md").read_text()
    assert [c.name for c in CHECKS if f"| `{c.name}` |" not in doc] == []


def test_docs_list_checks_in_run_order() -> None:
    doc = (REPO / "docs" / "conformance.md").read_text()
    rows = re.findall(r"^\| `([a-z_]+(?:\.[a-z_]+)+)` \| (?!fail|pass)", doc, re.MULTILINE)
    assert rows == [c.name for c in CHECKS]


def test_duplicate_check_name_is_refused() -> None:
    async def again(ctx: Context) -> str:
        return "never registered"

    before = list(CHECKS)
    with pytest.raises(ValueError, match=re.escape("duplicate check name 'models.shape'")):
        check("models.shape", "a second models.shape")(again)
    assert before == CHECKS


def test_select_checks_by_name_and_group_prefix() -> None:
    assert [c.name for c in select_checks(["models.shape"])] == ["models.shape"]
    group = {c.name for c in select_checks(["chat.stream"])}
    assert "chat.stream.role_first" in group and "chat.stream.done_last" in group
    assert not any(n.startswith("chat.nonstream") for n in group)
    assert len(select_checks(None)) == len(CHECKS)
    with pytest.raises(ValueError, match=r"nope, chat\.str"):
        select_checks(["models", "nope", "chat.str"])


def test_normalise_base() -> None:
    for url in ("http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/", " http://h:1 "):
        assert normalise_base(url) == "http://h:1"
    assert normalise_base("http://h:1/api/v1") == "http://h:1/api"


STREAM_CHECKS = [
    "chat.stream.content_type",
    "chat.stream.framing",
    "chat.stream.role_first",
    "chat.stream.single_id",
    "chat.stream.object",
    "chat.stream.created_model",
    "chat.stream.delta_shape",
    "chat.stream.finish_reason",
    "chat.stream.done_last",
    "chat.stream.no_error_event",
    "chat.stream.no_usage_by_default",
]


@pytest.mark.parametrize(
    ("mode", "failing", "detail"),
    [
        ("ok", set(), ""),
        ("nodone", {"chat.stream.done_last"}, "no [DONE]"),
        # No finish chunk before the error either: the finish_reason check sees 0.
        (
            "errdone",
            {"chat.stream.no_error_event", "chat.stream.finish_reason"},
            "followed by [DONE]",
        ),
        ("afterdone", {"chat.stream.done_last"}, "after [DONE]"),
        ("twoids", {"chat.stream.single_id"}, "2 distinct ids"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_planted_stream_violation_fails_exactly_its_check(
    mode: str, failing: set[str], detail: str
) -> None:
    async with planted(mode) as url:
        report = await run_conformance(url, "planted", reactor=reactor, only=STREAM_CHECKS)
    assert names(report, FAIL) == failing, table(report)
    assert names(report, PASS) == set(STREAM_CHECKS) - failing, table(report)
    assert all(detail in report.result(n).detail for n in failing if "finish" not in n)


@pytest_twisted.ensureDeferred
async def test_strictness_levels_for_error_statuses() -> None:
    only = ["errors.missing_model", "errors.missing_messages", "errors.invalid_json"]
    async with planted("ok") as url:
        strict = await run_conformance(url, "planted", reactor=reactor, only=only)
        lenient = await run_conformance(url, "planted", reactor=reactor, only=only, lenient=True)
    assert names(strict, FAIL) == set(only), table(strict)
    assert "status 422 (want 400" in strict.result("errors.invalid_json").detail
    assert names(lenient, PASS) == set(only), table(lenient)
    assert lenient.to_dict()["strictness"] == "lenient"
