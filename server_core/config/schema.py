"""The layout of the configuration file: the keys each section allows, in one table.

Every section is optional::

    server: {listen, api_keys | api_keys_env, max_body_bytes, keepalive_interval,
             drain_timeout, upstream: {connect_timeout, header_timeout, idle_timeout,
                                      max_header_bytes, max_headers},
             allowed_hosts, cors_origins, allow_unauthenticated, default_model,
             metrics_public, node_name, json_logs, access_log}
    llama_server: {executable, args, variants: {NAME: {executable, args}}, max_loaded,
                   ttl, start_timeout, stop_grace, liveness_interval, liveness_timeout,
                   liveness_misses, max_queue, queue_timeout,
                   max_concurrent_per_alias, max_wait, min_resident, preload,
                   child_metrics}
    ollama: {version, max_keep_alive}
    model_dirs: [DIR, ...]
    aliases:  [{alias, model, request_params, context_params, ttl, variant, priority, names}]
    external: [{alias, url, model, api_key_env, api_key_optional, request_params}]
    apis:     [{name, base_url, api_key_env, api_key_optional, models, prefix,
                forward_all_with_prefix, request_params}]

Top-level keys starting with ``x-`` are ignored: use them to hold YAML anchors
(``x-defaults: &d``) that ``<<: *d`` merges elsewhere. An unknown key is an error with a
"did you mean" taken from these tuples.
"""

from __future__ import annotations

__all__ = [
    "ALIAS_KEYS",
    "API_KEYS",
    "EXTERNAL_KEYS",
    "LLAMA_KEYS",
    "MANAGED_FLAGS",
    "OLLAMA_KEYS",
    "RESERVED_REQUEST_PARAMS",
    "SERVER_KEYS",
    "TOP_KEYS",
    "UPSTREAM_KEYS",
    "VARIANT_KEYS",
]

MANAGED_FLAGS = frozenset({"--port", "--host", "-m", "--model", "-a", "--alias"})
"""llama-server flags server_core sets itself; configs may not pass them."""

RESERVED_REQUEST_PARAMS = frozenset({"model", "messages", "prompt", "input", "stream"})
"""Request keys an alias may not default: they decide what the request *is*."""

TOP_KEYS = ("server", "llama_server", "ollama", "model_dirs", "aliases", "external", "apis")
OLLAMA_KEYS = ("version", "max_keep_alive")
SERVER_KEYS = (
    "listen",
    "api_keys",
    "api_keys_env",
    "max_body_bytes",
    "keepalive_interval",
    "drain_timeout",
    "upstream",
    "allowed_hosts",
    "cors_origins",
    "allow_unauthenticated",
    "default_model",
    "metrics_public",
    "node_name",
    "json_logs",
    "access_log",
)
UPSTREAM_KEYS = (
    "connect_timeout",
    "header_timeout",
    "idle_timeout",
    "max_header_bytes",
    "max_headers",
)
LLAMA_KEYS = (
    "executable",
    "args",
    "variants",
    "max_loaded",
    "ttl",
    "start_timeout",
    "stop_grace",
    "liveness_interval",
    "liveness_timeout",
    "liveness_misses",
    "max_queue",
    "queue_timeout",
    "max_concurrent_per_alias",
    "max_wait",
    "min_resident",
    "preload",
    "child_metrics",
)
VARIANT_KEYS = ("executable", "args")
ALIAS_KEYS = (
    "alias",
    "model",
    "request_params",
    "context_params",
    "ttl",
    "variant",
    "priority",
    "names",
)
EXTERNAL_KEYS = ("alias", "url", "model", "api_key_env", "api_key_optional", "request_params")
API_KEYS = (
    "name",
    "base_url",
    "api_key_env",
    "api_key_optional",
    "models",
    "prefix",
    "forward_all_with_prefix",
    "request_params",
)
