"""The scheduler's keys: ``llama_server.max_wait``/``min_resident`` and an alias's
``priority``, their defaults, their errors, and that they reach the shared context."""

from __future__ import annotations

from pathlib import Path

import pytest

from server_core.aliases import LocalAlias
from server_core.service import build_context
from tests.unit.config.support import ALIAS_A, assert_error_at_marked_line, parse


def test_defaults_batch_with_a_30_second_bound_and_no_minimum_residency(base: Path) -> None:
    cfg = parse(ALIAS_A, base)
    assert (cfg.llama.max_wait, cfg.llama.min_resident) == (30.0, 0.0)
    alias = cfg.aliases.resolve("a")
    assert isinstance(alias, LocalAlias) and alias.priority == 0


def test_the_keys_are_read(base: Path) -> None:
    text = ALIAS_A + "    priority: 2\nllama_server:\n  max_wait: 0\n  min_resident: 12.5\n"
    cfg = parse(text, base)
    assert (cfg.llama.max_wait, cfg.llama.min_resident) == (0.0, 12.5)
    alias = cfg.aliases.resolve("a")
    assert isinstance(alias, LocalAlias) and alias.priority == 2


def test_they_reach_the_shared_context(base: Path) -> None:
    text = ALIAS_A + "llama_server:\n  max_wait: 4\n  min_resident: 9\n"
    ctx = build_context(parse(text, base), reactor=None, client=None)  # type: ignore[arg-type]
    assert ctx is not None
    limits = ctx._limits  # the one place the limits are kept
    assert (limits.max_wait, limits.min_resident) == (4.0, 9.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("llama_server:\n  max_wait: -1  # <-\n", "must be 0 or more seconds"),
        ("llama_server:\n  min_resident: soon  # <-\n", "expected a number"),
        (ALIAS_A + "    priority: high  # <-\n", "expected a whole number"),
    ],
)
def test_bad_values_name_their_line(base: Path, text: str, message: str) -> None:
    assert_error_at_marked_line(base, text, message)
