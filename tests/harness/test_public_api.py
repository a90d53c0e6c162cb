"""``harness`` re-exports its public surface, loaded on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

import harness


@pytest.mark.parametrize("name", harness.__all__)
def test_every_export_is_the_subpackage_object(name: str) -> None:
    value = getattr(harness, name)
    module = sys.modules[harness._EXPORTS[name]]
    assert value is getattr(module, name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        harness.no_such_thing  # noqa: B018


def test_importing_harness_loads_no_subpackage() -> None:
    code = "import sys, harness; print(sorted(m for m in sys.modules if m.startswith('harness.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
