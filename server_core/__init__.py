"""server_core: an OpenAI-compatible server in front of llama.cpp llama-server processes.

The public surface is importable from here (``from server_core import DefaultRouterState``)
and loads on first use: ``scripts/install-llama-server`` imports this package before
anything is installed, so importing it must need nothing but the standard library.

- ``IRouterState`` / ``DefaultRouterState``: model name -> alias -> where the request goes,
  and the reply delivered to the client;
- ``ISharedContext`` / ``DefaultSharedContext``: which llama-server processes run;
- ``LlamaServerProcess``: one managed child;
- ``ForwardedSse``, ``DirectSse``, ``DirectEvent``: streams relayed or generated here;
- ``ContextError``, ``RouterStateError``, ``UpstreamError``: the error families;
- ``Config``, ``load_config``, ``parse_config``, ``default_config``; ``make_service``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "IRouterState": "server_core.interfaces",
    "ISharedContext": "server_core.interfaces",
    "ILease": "server_core.interfaces",
    "IServerProcess": "server_core.interfaces",
    "IUpstreamClient": "server_core.interfaces",
    "DefaultRouterState": "server_core.router_state",
    "UpstreamReply": "server_core.router_state",
    "DefaultSharedContext": "server_core.shared_context",
    "ContextLimits": "server_core.shared_context",
    "LlamaServerProcess": "server_core.process",
    "UpstreamClient": "server_core.upstream",
    "ForwardedSse": "server_core.sse",
    "DirectSse": "server_core.sse",
    "DirectEvent": "server_core.sse",
    "ContextError": "server_core.errors",
    "RouterStateError": "server_core.errors",
    "ServerCoreError": "server_core.errors",
    "UpstreamError": "server_core.errors",
    "ConfigError": "server_core.errors",
    "Config": "server_core.config",
    "load_config": "server_core.config",
    "parse_config": "server_core.config",
    "default_config": "server_core.config",
    "make_service": "server_core.service",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'server_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
