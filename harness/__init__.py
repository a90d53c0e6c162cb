"""harness: imitate llama-server faithfully, then break it on purpose.

- ``harness.fake_llama``: a fake llama-server (same flags, same HTTP API, scripted faults);
- ``harness.netfault``: a TCP fault proxy with Toxiproxy's toxics;
- ``harness.client``: a stream client that times and classifies every response;
- ``harness.chaos``: load plus seeded random faults, judged against the invariants;
- ``harness.conformance``: named checks for any OpenAI-compatible server.

The most used names are importable from here (``from harness import FakeConfig``). They
load on first use, so the fake's own process does not import the chaos runner.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FakeConfig": "harness.fake_llama",
    "FakeLlamaProcess": "harness.fake_llama",
    "FakeServer": "harness.fake_llama",
    "Faults": "harness.fake_llama",
    "expected_text": "harness.fake_llama",
    "parse_faults": "harness.fake_llama",
    "start_fake_server": "harness.fake_llama",
    "FaultProxy": "harness.netfault",
    "Toxic": "harness.netfault",
    "StreamResult": "harness.client",
    "chat": "harness.client",
    "completions": "harness.client",
    "stream_request": "harness.client",
    "ChaosOptions": "harness.chaos",
    "ChaosReport": "harness.chaos",
    "run_chaos": "harness.chaos",
    "CHECKS": "harness.conformance",
    "Report": "harness.conformance",
    "run_conformance": "harness.conformance",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
