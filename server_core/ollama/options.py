"""Ollama's ``options`` as llama-server request parameters: which are mapped, which ignored.

llama-server's OpenAI-compatible routes accept its own sampling parameters next to
OpenAI's, so most of Ollama's runtime options have a direct counterpart. The load-time
options (context size, GPU layers, threads, memory mapping) belong to how the
llama-server process is started, which the server's configuration decides for every
client; they are accepted and ignored, like the samplers llama.cpp has removed. Options
Ollama does not know are ignored as Ollama ignores them. A mapped option of the wrong
type is a 400 that names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server_core.errors import BadRequest

__all__ = ["IGNORED", "MAPPED", "map_options"]

_NUMBER = "a number"
_INTEGER = "an integer"

# Ollama option -> (llama-server parameter, what its value must be).
MAPPED: dict[str, tuple[str, str]] = {
    "temperature": ("temperature", _NUMBER),
    "top_p": ("top_p", _NUMBER),
    "top_k": ("top_k", _INTEGER),
    "min_p": ("min_p", _NUMBER),
    "typical_p": ("typical_p", _NUMBER),
    "seed": ("seed", _INTEGER),
    "num_predict": ("max_tokens", _INTEGER),
    "repeat_penalty": ("repeat_penalty", _NUMBER),
    "repeat_last_n": ("repeat_last_n", _INTEGER),
    "presence_penalty": ("presence_penalty", _NUMBER),
    "frequency_penalty": ("frequency_penalty", _NUMBER),
    "mirostat": ("mirostat", _INTEGER),
    "mirostat_tau": ("mirostat_tau", _NUMBER),
    "mirostat_eta": ("mirostat_eta", _NUMBER),
    "num_keep": ("n_keep", _INTEGER),
}

# Accepted and ignored: set where the llama-server process starts, or gone from llama.cpp.
IGNORED = frozenset(
    {
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mmap",
        "use_mlock",
        "embedding_only",
        "num_thread",
        "numa",
        "tfs_z",
        "penalize_newline",
    }
)


def _checked(name: str, value: Any, kind: str) -> Any:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == _INTEGER:
        ok = ok and float(value).is_integer()
    if not ok:
        raise BadRequest(f"options.{name} must be {kind}.", param=f"options.{name}")
    return int(value) if kind == _INTEGER else value


def _stop(value: Any) -> list[str]:
    words = [value] if isinstance(value, str) else value
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise BadRequest(
            "options.stop must be a string or a list of strings.", param="options.stop"
        )
    return words


def map_options(options: object) -> dict[str, Any]:
    """The llama-server parameters for Ollama ``options`` (a 400 names a wrong one)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise BadRequest("options must be an object of Ollama model options.", param="options")
    out: dict[str, Any] = {}
    for name, value in options.items():
        if value is None or name in IGNORED:
            continue
        if name == "stop":
            out["stop"] = _stop(value)
        elif name in MAPPED:
            target, kind = MAPPED[name]
            out[target] = _checked(name, value, kind)
    # Ollama's -1 (no limit) and -2 (fill the context) are llama-server's default.
    if isinstance(out.get("max_tokens"), int) and out["max_tokens"] < 0:
        del out["max_tokens"]
    return out
