"""What ``/api/tags``, ``/api/show`` and ``/api/ps`` say about the models this server serves.

Every model ``/v1/models`` lists is listed. A model served by a managed llama-server has a
GGUF file, whose header (``gguf``) gives the family, parameter size, quantization,
context length and chat template; a model on a server someone else runs has none of
that, so its details stay empty and its capabilities are assumed (completion, tools).
A ``digest`` is a fingerprint of the file's path, size and modification time (hashing a
file of gigabytes on every listing is out of the question), stable while the file is.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from server_core.aliases import LocalAlias
from server_core.ollama.gguf import GgufCache, GgufInfo
from server_core.ollama.reply_bodies import created_at

__all__ = ["ModelCard", "capabilities", "card_for", "served_context"]

_EMBEDDING_FLAGS = frozenset({"--embedding", "--embeddings"})
_VISION_FLAGS = frozenset({"-mm", "--mmproj", "-mmu", "--mmproj-url"})
_CTX_FLAGS = frozenset({"-c", "--ctx-size"})
# Far enough ahead to read as "never" (Ollama shows a date centuries away for keep_alive -1).
_FOREVER_SECONDS = 100 * 365 * 86400


def _flag_value(params: Sequence[str], names: frozenset[str]) -> str | None:
    """The value of the first flag in ``names`` (``--flag value`` or ``--flag=value``)."""
    for i, token in enumerate(params):
        name, _, inline = token.partition("=")
        if name in names:
            if inline:
                return inline
            return params[i + 1] if i + 1 < len(params) else ""
    return None


def _has_flag(params: Sequence[str], names: frozenset[str]) -> bool:
    return any(token.partition("=")[0] in names for token in params)


def served_context(alias: LocalAlias, info: GgufInfo | None) -> int | None:
    """The context the llama-server is started with (``--ctx-size``), else the trained one."""
    trained = info.context_length if info else None
    value = _flag_value(alias.context_params, _CTX_FLAGS)
    try:
        served = int(value) if value else 0
    except ValueError:
        served = 0
    if served > 0:
        return min(served, trained) if trained else served
    return trained


def capabilities(alias: LocalAlias | None, info: GgufInfo | None) -> list[str]:
    """Ollama's ``capabilities`` of a model (see the module doc for models without a file)."""
    if alias is None:
        return ["completion", "tools"]
    if _has_flag(alias.context_params, _EMBEDDING_FLAGS):
        return ["embedding"]
    found = ["completion"]
    template = (info.chat_template if info else None) or ""
    if "tools" in template or "tool_calls" in template:
        found.append("tools")
    if "enable_thinking" in template or "reasoning_content" in template or "<think>" in template:
        found.append("thinking")
    if _has_flag(alias.context_params, _VISION_FLAGS):
        found.append("vision")
    return found


def sees_images(alias: LocalAlias) -> bool:
    """True when the alias's llama-server is started with a multimodal projector."""
    return _has_flag(alias.context_params, _VISION_FLAGS)


def _parameter_size(info: GgufInfo | None) -> str:
    count = info.parameter_count if info else None
    if not count:
        return (info.size_label or "") if info else ""
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.1f}{unit}" if unit != "M" else f"{count / scale:.2f}{unit}"
    return str(count)


class ModelCard:
    """One model as Ollama's listings describe it."""

    def __init__(
        self, name: str, alias: LocalAlias | None, info: GgufInfo | None, created: float
    ) -> None:
        self.name = name
        self.alias = alias
        self.info = info
        self.size = 0
        self.modified = created
        if alias is not None:
            try:
                stat = os.stat(alias.model_path)
                self.size, self.modified = stat.st_size, stat.st_mtime
            except OSError:
                pass
        stamp = f"{name}\0{alias.model_path if alias else ''}\0{self.size}\0{self.modified}"
        self.digest = hashlib.sha256(stamp.encode("utf-8")).hexdigest()

    def details(self) -> dict[str, Any]:
        family = (self.info.architecture if self.info else None) or ""
        return {
            "parent_model": "",
            "format": "gguf" if self.alias is not None else "",
            "family": family,
            "families": [family] if family else None,
            "parameter_size": _parameter_size(self.info),
            "quantization_level": (self.info.quantization if self.info else None) or "",
        }

    def tag(self) -> dict[str, Any]:
        """One ``/api/tags`` entry."""
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": created_at(self.modified),
            "size": self.size,
            "digest": self.digest,
            "details": self.details(),
        }

    def model_info(self) -> dict[str, Any]:
        info = self.info
        if info is None:
            return {}
        values = {k: v for k, v in info.values.items() if k != "tokenizer.chat_template"}
        arch = info.architecture
        context = served_context(self.alias, info) if self.alias else info.context_length
        if arch and context:
            values[f"{arch}.context_length"] = context
        if info.parameter_count:
            values["general.parameter_count"] = info.parameter_count
        if info.basename is None and info.name is not None:
            values["general.basename"] = info.name
        return values

    def show(self) -> dict[str, Any]:
        """The ``/api/show`` answer."""
        template = (self.info.chat_template if self.info else None) or ""
        return {
            "license": "",
            "modelfile": f"# {self.name}: served by server_core; it has no Modelfile.\n",
            "parameters": "",
            "template": template,
            "details": self.details(),
            "model_info": self.model_info(),
            "capabilities": capabilities(self.alias, self.info),
            "modified_at": created_at(self.modified),
        }

    def running(self, expires: float | None, now: float) -> dict[str, Any]:
        """One ``/api/ps`` entry; ``expires`` None: kept loaded."""
        until = now + _FOREVER_SECONDS if expires is None else expires
        context = served_context(self.alias, self.info) if self.alias else None
        return {
            "name": self.name,
            "model": self.name,
            "size": self.size,
            "digest": self.digest,
            "details": self.details(),
            "expires_at": datetime.fromtimestamp(until, UTC).isoformat().replace("+00:00", "Z"),
            "size_vram": 0,
            "context_length": context or 0,
        }


def card_for(name: str, alias: LocalAlias | None, cache: GgufCache, created: float) -> ModelCard:
    """The card of ``name`` (``alias`` None for a model on someone else's server)."""
    info = cache.info(alias.model_path) if alias is not None else None
    return ModelCard(name, alias, info, created)
