"""``llama_server.child_metrics``: on unless turned off, and a boolean."""

from __future__ import annotations

from pathlib import Path

from server_core.config.schema import LLAMA_KEYS
from tests.unit.config.support import ALIAS_A, assert_error_at_marked_line, parse


def test_on_by_default_and_read_when_turned_off(base: Path) -> None:
    assert "child_metrics" in LLAMA_KEYS
    assert parse(ALIAS_A, base).llama.child_metrics is True
    off = parse(ALIAS_A + "llama_server:\n  child_metrics: false\n", base)
    assert off.llama.child_metrics is False


def test_a_non_boolean_names_its_line(base: Path) -> None:
    text = "llama_server:\n  child_metrics: sometimes  # <-\n"
    assert_error_at_marked_line(base, text, "child_metrics")
