"""``server_core`` re-exports its public surface and imports nothing until it is used."""

from __future__ import annotations

import subprocess
import sys

import pytest

import server_core

SEED_NAMES = {
    "DefaultRouterState",
    "DefaultSharedContext",
    "DirectSse",
    "DirectEvent",
    "ForwardedSse",
    "ContextError",
    "RouterStateError",
    "IRouterState",
    "ISharedContext",
}


def test_the_seed_crate_names_are_public() -> None:
    assert set(server_core.__all__) >= SEED_NAMES


@pytest.mark.parametrize("name", server_core.__all__)
def test_every_export_is_the_defining_modules_object(name: str) -> None:
    value = getattr(server_core, name)
    assert value is getattr(sys.modules[server_core._EXPORTS[name]], name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        server_core.no_such_thing  # noqa: B018


def test_importing_the_package_needs_only_the_standard_library() -> None:
    # scripts/install-llama-server imports server_core.llama_install before any install.
    code = (
        "import sys, server_core.llama_install, server_core.model_install; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('twisted', 'klein', 'treq', 'zope', 'yaml')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
