"""Settings and the YAML configuration file that sets them.

``load_config(path)`` / ``parse_config(text)`` (``loader``) turn YAML into a frozen
``Config`` (``settings``), or raise a ``ConfigError`` naming the file and line.
``default_config()`` (``defaults``) is the embedded configuration used without a file.
The file's layout is in ``schema``; model folders are scanned in ``model_dirs``.
"""

from server_core.config.defaults import (
    COMPLETION_MODEL_ALIAS,
    DEFAULT_MODEL_ALIAS,
    completion_model_path,
    default_config,
    default_config_yaml,
    default_model_path,
)
from server_core.config.loader import load_config, parse_config
from server_core.config.schema import MANAGED_FLAGS, RESERVED_REQUEST_PARAMS
from server_core.config.settings import (
    DEFAULT_EXECUTABLE,
    Config,
    LlamaSettings,
    OllamaSettings,
    ServerSettings,
    UpstreamSettings,
)

__all__ = [
    "COMPLETION_MODEL_ALIAS",
    "DEFAULT_EXECUTABLE",
    "DEFAULT_MODEL_ALIAS",
    "MANAGED_FLAGS",
    "RESERVED_REQUEST_PARAMS",
    "Config",
    "LlamaSettings",
    "OllamaSettings",
    "ServerSettings",
    "UpstreamSettings",
    "completion_model_path",
    "default_config",
    "default_config_yaml",
    "default_model_path",
    "load_config",
    "parse_config",
]
