"""``FakeConfig``, the settings of one fake server, and ``Stats``, what it counted.

Both are plain data shared by the server (``server.py``), its HTTP routes and its
generation jobs; nothing here does I/O.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from harness.fake_llama.faults import Faults
from harness.fake_llama.generate import DEFAULT_N_CTX

__all__ = ["FakeConfig", "Stats", "generation_settings"]


@dataclass
class FakeConfig:
    """Settings of one fake server; the fields mirror llama-server's flags."""

    model_path: str | None = None  # -m; None in-process = no file check
    alias: str | None = None  # -a; default: model file name, else "fake-model"
    host: str = "127.0.0.1"
    port: int = 0  # 0 = any free port
    ctx_size: int = DEFAULT_N_CTX  # -c, shared by the slots
    parallel: int = 1  # -np
    api_keys: tuple[str, ...] = ()
    embeddings: bool = False  # --embeddings: embeddings only, no completions
    metrics: bool = False  # --metrics
    slots_endpoint: bool = True  # --slots / --no-slots
    props_endpoint: bool = False  # --props (POST /props)
    webui: bool = True
    jinja: bool = True  # --jinja / --no-jinja: how chat_template is read
    chat_template: str | None = None  # --chat-template(-file): text, or a name with no jinja
    n_gpu_layers: str = "auto"
    sse_ping_interval: float = 30.0  # seconds of silence before a ":" ping; <= 0 disables
    seed: int = 0
    n_predict: int = -1  # -n default token limit; -1 = until EOS
    faults: str | Faults = ""
    verbose: bool = False
    extra_args: tuple[str, ...] = ()  # llama-server flags the fake accepts and ignores

    @property
    def model_alias(self) -> str:
        """The model id in every response: the first alias, else the model file name."""
        if self.alias:
            return self.alias.split(",")[0].strip()
        if self.model_path:
            return os.path.basename(self.model_path.rstrip("/")) or "fake-model"
        return "fake-model"

    @property
    def aliases(self) -> list[str]:
        """Every ``-a`` alias (comma-separated), or just the model id."""
        if self.alias:
            return [a.strip() for a in self.alias.split(",") if a.strip()]
        return [self.model_alias]

    @property
    def n_ctx_slot(self) -> int:
        """Context per slot: llama-server splits ``-c`` between ``-np`` slots."""
        return max(1, self.ctx_size // max(1, self.parallel))


def generation_settings(config: FakeConfig) -> dict[str, Any]:
    """llama-server's default sampling parameters (``/props``, ``/slots``, native final)."""
    return {
        "seed": config.seed,
        "temperature": 0.8,
        "top_k": 40,
        "top_p": 0.95,
        "min_p": 0.05,
        "max_tokens": config.n_predict,
        "n_predict": config.n_predict,
        "n_keep": 0,
        "ignore_eos": False,
        "stream": False,
        "n_probs": 0,
        "samplers": ["top_k", "top_p", "min_p", "temperature"],
    }


@dataclass
class Stats:
    """Counters observable in-process and through ``/metrics``."""

    requests: int = 0  # generation requests that reached a handler
    cancelled: int = 0  # generations abandoned because the client disconnected
    completed: int = 0  # responses that ended normally
    faulted: int = 0  # responses ended by an injected fault
    prompt_tokens: int = 0
    predicted_tokens: int = 0
    prompt_seconds: float = 0.0
    predicted_seconds: float = 0.0
    decode_calls: int = 0
