"""``names`` on an alias (more names, one process) and ``server.default_model``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.config.support import EXTERNAL_E, assert_error_at_marked_line, parse

NAMED = "aliases:\n  - alias: a\n    model: models/a.gguf\n    names: [gpt-4o-mini, gpt-4o]\n"


def test_names_resolve_to_the_one_alias_and_are_listed(base: Path) -> None:
    cfg = parse(NAMED, base)
    alias = cfg.aliases.resolve("a")
    assert cfg.aliases.resolve("gpt-4o-mini") is alias is cfg.aliases.resolve("gpt-4o")
    assert alias.names == ("gpt-4o-mini", "gpt-4o")  # type: ignore[union-attr]
    assert [m["id"] for m in cfg.aliases.list_models()] == ["a", "gpt-4o-mini", "gpt-4o"]
    assert len(cfg.aliases.local_aliases()) == 1


def test_a_name_used_twice_is_an_error_at_its_line(base: Path) -> None:
    text = NAMED + "external:\n  - alias: gpt-4o  # <-\n    url: http://h\n"
    assert_error_at_marked_line(base, text, "alias name 'gpt-4o' is already used on line 4")
    text = "aliases:\n  - alias: a\n    model: models/a.gguf\n    names: [a]  # <-\n"
    assert_error_at_marked_line(base, text, "alias name 'a' is already used on line 2")


def test_default_model(base: Path) -> None:
    cfg = parse("server:\n  default_model: gpt-4o\n" + NAMED + EXTERNAL_E, base)
    assert cfg.server.default_model == "gpt-4o"
    assert cfg.aliases.default_model() == "gpt-4o"


def test_without_default_the_only_alias_serves(base: Path) -> None:
    assert parse(NAMED, base).aliases.default_model() == "a"  # its names are the same alias
    assert parse(NAMED + EXTERNAL_E, base).aliases.default_model() is None
    assert parse("", base).aliases.default_model() is None


@pytest.mark.parametrize("value", ["nope", "gpt-4o-min"])
def test_default_model_must_name_a_model(base: Path, value: str) -> None:
    text = f"server:\n  default_model: {value}  # <-\n" + NAMED
    assert_error_at_marked_line(base, text, f"server.default_model: no model '{value}'")
