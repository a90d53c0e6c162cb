"""Helpers for the configuration tests: parse a snippet, find the line an error must name."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from server_core.config import Config, parse_config
from server_core.errors import ConfigError

ALIAS_A = "aliases:\n  - alias: a\n    model: models/a.gguf\n"
EXTERNAL_E = "external:\n  - alias: e\n    url: http://h\n"


def parse(text: str, base: Path, env: dict[str, str] | None = None) -> Config:
    return parse_config(textwrap.dedent(text), file="conf.yaml", env=env or {}, base_dir=str(base))


def marked_line(text: str) -> int:
    """The number of the line carrying the ``# <-`` marker."""
    lines = [i for i, line in enumerate(text.splitlines(), 1) if "# <-" in line]
    assert len(lines) == 1, "mark exactly one line"
    return lines[0]


def assert_error_at_marked_line(base: Path, text: str, message: str) -> None:
    """Parsing ``text`` fails with ``message``, naming the file and the marked line."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, file="conf.yaml", env={"EMPTY": " , "}, base_dir=str(base))
    err = info.value
    line = marked_line(text)
    assert (err.file, err.line) == ("conf.yaml", line), str(err)
    assert message in err.detail
    assert str(err).startswith(f"conf.yaml:{line}: ")
