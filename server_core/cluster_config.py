"""An HAProxy 2.6 configuration for several server_core nodes (docs/scale-out.md).

    server-core-cluster-config cluster.yaml > haproxy.cfg
    server-core-cluster-config cluster.yaml -o haproxy.cfg --check   # + haproxy -c

A pure generator: a small description (YAML or JSON) of the nodes and the models each
serves becomes one configuration file. What it encodes and why:

- Routing on the JSON body: ``option http-buffer-request`` keeps the request body (up
  to ``tune.bufsize`` = ``max_body_bytes``) and ``req.body,json_query('$.model')``
  reads its ``model`` into ``txn.model``; each listed name goes to the backend of the
  nodes that serve it. A request without a listed model (GETs, unknown names) goes to
  ``be_any``: a node then answers for itself (serves it or says 404), so a request is
  never answered by another model. A body the buffer cut before its ``model`` is a 413.
- Health: each model backend checks ``GET /ready?model=NAME`` (with the API key when
  ``api_key_env`` names its variable; HAProxy expands ``${VAR}`` at start, the key never
  lands in the file); ``be_any`` checks ``GET /ready``. A draining node fails both
  before its streams end.
- Retries only before the first byte: ``retry-on conn-failure empty-response 503`` with
  ``option redispatch 1`` (another node on each retry). HAProxy never retries once a
  response has begun, and server_core's 503s (swap, full queue, drain) are refusals
  before any work; the last 503 reaches the client with its ``Retry-After``.
- Streaming-safe timeouts: ``timeout server``/``client`` bound the silence of a whole
  generation (a non-streamed answer sends nothing until it is done), ``timeout
  tunnel`` the upgraded connections; ``option http-no-delay`` sends each event at once.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

__all__ = [
    "ClusterConfigError",
    "ClusterNode",
    "ClusterSpec",
    "haproxy_config",
    "main",
    "parse_cluster",
]

_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]*$")
_DURATION = re.compile(r"^[0-9]+(us|ms|s|m|h|d)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})$")

TIMEOUT_DEFAULTS: dict[str, str] = {
    "connect": "2s",
    "client": "10m",
    "server": "10m",
    "tunnel": "1h",
    "http_request": "30s",
    "http_keep_alive": "10s",
    "queue": "30s",
    "check": "1s",
}
CHECK_DEFAULTS: dict[str, str | int] = {"interval": "1s", "fall": 2, "rise": 2}

_ERROR_BODY = '{"error":{"code":%d,"message":"%s","type":"%s"}}'
_TOO_LARGE = _ERROR_BODY % (
    413,
    "The balancer could not read the model of a body this large; "
    "put model first or raise max_body_bytes.",
    "invalid_request_error",
)
_BALANCER_ERRORS = (
    (502, "The node serving this model failed before answering; retry.", "server_error"),
    (503, "No node can serve this model now; retry later.", "unavailable"),
    (504, "The node serving this model did not answer in time.", "timeout"),
)


class ClusterConfigError(ValueError):
    """The description is wrong; the message names the key."""


@dataclass(frozen=True)
class ClusterNode:
    """One server_core: its HAProxy server name, ``host:port`` and the model names it serves."""

    name: str
    address: str
    models: tuple[str, ...]


@dataclass(frozen=True)
class ClusterSpec:
    """The whole description, with defaults filled in."""

    nodes: tuple[ClusterNode, ...]
    listen: str = "127.0.0.1:8080"
    api_key_env: str | None = None
    check_host: str = "localhost"
    retries: int = 2
    max_body_bytes: int = 262144
    log: bool = False
    stats: str | None = None
    timeouts: Mapping[str, str] = field(default_factory=lambda: dict(TIMEOUT_DEFAULTS))
    check: Mapping[str, str | int] = field(default_factory=lambda: dict(CHECK_DEFAULTS))

    def models(self) -> list[str]:
        """Every model name, in the order the nodes first list them."""
        return list(dict.fromkeys(m for node in self.nodes for m in node.models))

    def serving(self, model: str) -> list[ClusterNode]:
        return [node for node in self.nodes if model in node.models]


def _need(ok: bool, path: str, problem: str) -> None:
    if not ok:
        raise ClusterConfigError(f"{path}: {problem}")


def _duration(value: Any, path: str) -> str:
    text = f"{value}s" if isinstance(value, int) and not isinstance(value, bool) else value
    _need(
        isinstance(text, str) and bool(_DURATION.match(text)),
        path,
        f"{value!r} is not a duration (seconds, or HAProxy's 500ms / 10s / 10m / 1h)",
    )
    return str(text)


def _address(value: Any, path: str) -> str:
    match = _ADDRESS.match(value) if isinstance(value, str) else None
    _need(match is not None, path, f"{value!r} is not HOST:PORT")
    assert match is not None
    _need(0 < int(match.group(2)) < 65536, path, f"port {match.group(2)} is out of range")
    return str(value)


def _parse_node(raw: Any, path: str) -> ClusterNode:
    _need(isinstance(raw, Mapping), path, "a node is a mapping {name, address, models}")
    unknown = set(raw) - {"name", "address", "models"}
    _need(not unknown, path, f"unknown key(s) {sorted(unknown)}")
    name = raw.get("name")
    _need(
        isinstance(name, str) and bool(_NODE_NAME.match(name)),
        f"{path}.name",
        f"{name!r} is not a node name (letters, digits, . _ -)",
    )
    models = raw.get("models")
    _need(
        isinstance(models, list) and bool(models),
        f"{path}.models",
        "a non-empty list of model names",
    )
    for i, model in enumerate(models):
        _need(
            isinstance(model, str) and bool(_MODEL_NAME.match(model)),
            f"{path}.models[{i}]",
            f"{model!r} is not a model name HAProxy can match (letters, digits, ._:/@+=-)",
        )
    return ClusterNode(name, _address(raw.get("address"), f"{path}.address"), tuple(models))


def _parse_knobs(raw: Any, defaults: Mapping[str, Any], path: str) -> dict[str, Any]:
    _need(isinstance(raw, Mapping), path, "a mapping")
    unknown = set(raw) - set(defaults)
    _need(not unknown, path, f"unknown key(s) {sorted(unknown)}; known: {sorted(defaults)}")
    merged = {**defaults, **raw}
    for key, value in merged.items():
        if key in ("fall", "rise"):
            _need(isinstance(value, int) and value > 0, f"{path}.{key}", "a positive integer")
        else:
            merged[key] = _duration(value, f"{path}.{key}")
    return merged


def parse_cluster(data: Any) -> ClusterSpec:
    """A ``ClusterSpec`` from the loaded description; ``ClusterConfigError`` names the key."""
    _need(isinstance(data, Mapping), "<top>", "the description is a mapping with 'nodes'")
    known = {f for f in ClusterSpec.__dataclass_fields__}
    unknown = set(data) - known
    _need(not unknown, "<top>", f"unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    raw_nodes = data.get("nodes")
    _need(isinstance(raw_nodes, list) and bool(raw_nodes), "nodes", "a non-empty list")
    nodes = tuple(_parse_node(raw, f"nodes[{i}]") for i, raw in enumerate(raw_nodes))
    names = [node.name for node in nodes]
    _need(len(set(names)) == len(names), "nodes", f"node names repeat: {names}")
    key_env = data.get("api_key_env")
    _need(
        key_env is None or (isinstance(key_env, str) and bool(_ENV_NAME.match(key_env))),
        "api_key_env",
        f"{key_env!r} is not an environment variable name",
    )
    check_host = data.get("check_host", "localhost")
    _need(
        isinstance(check_host, str) and bool(re.match(r"^[A-Za-z0-9.:\[\]-]+$", check_host)),
        "check_host",
        "a Host header the nodes accept (their allowed_hosts; localhost always is)",
    )
    retries, body = data.get("retries", 2), data.get("max_body_bytes", 262144)
    _need(isinstance(retries, int) and 0 <= retries <= 10, "retries", "an integer 0..10")
    _need(isinstance(body, int) and 16384 <= body <= 1 << 26, "max_body_bytes", "16384..64 MiB")
    stats = data.get("stats")
    return ClusterSpec(
        nodes=nodes,
        listen=_address(data.get("listen", "127.0.0.1:8080"), "listen"),
        api_key_env=key_env,
        check_host=check_host,
        retries=retries,
        max_body_bytes=body,
        log=bool(data.get("log", False)),
        stats=None if stats is None else _address(stats, "stats"),
        timeouts=_parse_knobs(data.get("timeouts", {}), TIMEOUT_DEFAULTS, "timeouts"),
        check=_parse_knobs(data.get("check", {}), CHECK_DEFAULTS, "check"),
    )


def backend_name(index: int, model: str) -> str:
    """``be_<index>_<model>`` with HAProxy-safe characters (the index keeps them apart)."""
    return f"be_{index}_" + re.sub(r"[^A-Za-z0-9_.-]", "_", model)


def _global_and_defaults(spec: ClusterSpec) -> list[str]:
    t, c = spec.timeouts, spec.check
    lines = ["global", f"    tune.bufsize {spec.max_body_bytes}"]
    if spec.log:
        lines.append("    log stderr format raw local0 info")
    lines += ["", "defaults", "    mode http"]
    if spec.log:
        lines += ["    log global", "    option httplog"]
    lines += [f"    timeout {key.replace('_', '-')} {t[key]}" for key in TIMEOUT_DEFAULTS]
    lines += [
        "    option http-no-delay",
        "    option forwardfor",
        f"    retries {spec.retries}",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response 503",
        f"    default-server inter {c['interval']} fall {c['fall']} rise {c['rise']}",
    ]
    for status, message, kind in _BALANCER_ERRORS:
        body = _ERROR_BODY % (status, message, kind)
        after = " hdr Retry-After 2" if status == 503 else ""
        lines.append(
            f"    http-error status {status} content-type application/json string '{body}'{after}"
        )
    return lines


def _frontend(spec: ClusterSpec, backends: Sequence[tuple[str, str]]) -> list[str]:
    lines = [
        "",
        "frontend server_core",
        f"    bind {spec.listen}",
        "    option http-buffer-request",
        "    http-request set-var(txn.model) req.body,json_query('$.model') if METH_POST",
        # A body larger than the buffer, whose model was not in the part read: refuse it
        # (413) rather than send it to a node that may not serve it (a misleading 404).
        "    http-request set-var(txn.body_len) req.body_len if METH_POST",
        "    http-request set-var(txn.body_unread) req.body_size,sub(txn.body_len) if METH_POST",
        "    http-request return status 413 content-type application/json"
        f" string '{_TOO_LARGE}' if METH_POST !{{ var(txn.model) -m found }}"
        " { var(txn.body_unread) -m int gt 0 }",
    ]
    lines += [
        f"    use_backend {backend} if {{ var(txn.model) -m str {model} }}"
        for model, backend in backends
    ]
    lines.append("    default_backend be_any")
    return lines


def _backend(spec: ClusterSpec, name: str, uri: str, nodes: Sequence[ClusterNode]) -> list[str]:
    send = f"    http-check send meth GET uri {uri} ver HTTP/1.1 hdr Host {spec.check_host}"
    if spec.api_key_env:
        send += f' hdr Authorization "Bearer ${{{spec.api_key_env}}}"'
    lines = ["", f"backend {name}", "    balance leastconn", "    option httpchk", send]
    lines.append("    http-check expect status 200")
    lines += [f"    server {node.name} {node.address} check" for node in nodes]
    return lines


def haproxy_config(spec: ClusterSpec) -> str:
    """The configuration text for ``spec`` (see the module doc for what it encodes)."""
    backends = [(m, backend_name(i, m)) for i, m in enumerate(spec.models())]
    lines = [
        "# Generated by server-core-cluster-config; edit the description, not this file.",
        *_global_and_defaults(spec),
        *_frontend(spec, backends),
    ]
    for model, backend in backends:
        uri = "/ready?model=" + quote(model, safe="")
        lines += _backend(spec, backend, uri, spec.serving(model))
    lines += _backend(spec, "be_any", "/ready", spec.nodes)
    if spec.stats:
        lines += ["", "listen stats", f"    bind {spec.stats}", "    stats enable"]
        lines += ["    stats uri /", "    stats refresh 1s"]
    return "\n".join(lines) + "\n"


def load_description(path: Path) -> ClusterSpec:
    """Read a YAML (or JSON) description file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ClusterConfigError(f"cannot read it: {error}") from error
    return parse_cluster(data)


def check_with_haproxy(config: Path, haproxy: str | None = None) -> tuple[bool, str]:
    """``haproxy -c -f config``: (valid, HAProxy's output)."""
    binary = haproxy or shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if binary is None:
        return False, "haproxy is not installed (scripts/install-haproxy)"
    done = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="server-core-cluster-config",
        description="Write an HAProxy 2.6 configuration for server_core nodes.",
    )
    parser.add_argument("description", type=Path, help="YAML/JSON: nodes, models, options")
    parser.add_argument("-o", "--output", type=Path, help="write here (default: stdout)")
    parser.add_argument("--check", action="store_true", help="validate with haproxy -c")
    args = parser.parse_args(argv)
    try:
        text = haproxy_config(load_description(args.description))
    except ClusterConfigError as error:
        print(f"{args.description}: {error}", file=sys.stderr)
        return 2
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    if not args.check:
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        checked = args.output or Path(scratch) / "haproxy.cfg"
        checked.write_text(text, encoding="utf-8")
        valid, output = check_with_haproxy(checked)
    print(output, file=sys.stderr)
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())
