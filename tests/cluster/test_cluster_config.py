"""server_core.cluster_config: the description it accepts, the HAProxy text it writes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from server_core.cluster_config import (
    ClusterConfigError,
    check_with_haproxy,
    haproxy_config,
    main,
    parse_cluster,
)

pytestmark = pytest.mark.timeout(30)

DESCRIPTION: dict[str, Any] = {
    "listen": "127.0.0.1:18080",
    "api_key_env": "SERVER_CORE_API_KEY",
    "check": {"interval": "500ms", "fall": 3},
    "timeouts": {"server": 900},
    "nodes": [
        {"name": "gpu-a", "address": "10.0.0.2:8000", "models": ["qwen", "org/llama:7b"]},
        {"name": "gpu-b", "address": "10.0.0.3:8000", "models": ["qwen", "mistral"]},
    ],
}


def sections(text: str) -> dict[str, list[str]]:
    """Each ``backend``/``frontend`` header line -> its indented lines, stripped."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line and not line.startswith((" ", "#")):
            current = found.setdefault(line, [])
        elif line.strip():
            current.append(line.strip())
    return found


def servers(lines: list[str]) -> list[str]:
    return [line.split()[1] for line in lines if line.startswith("server ")]


def test_each_model_goes_to_the_nodes_that_serve_it_checked_on_its_readiness() -> None:
    text = haproxy_config(parse_cluster(DESCRIPTION))
    parts = sections(text)
    frontend = parts["frontend server_core"]
    routes: dict[str, str] = {}
    for line in frontend:
        route = re.match(r"use_backend (\S+) if \{ var\(txn.model\) -m str (\S+) \}", line)
        if route:
            routes[route.group(2)] = route.group(1)
    assert list(routes) == ["qwen", "org/llama:7b", "mistral"]
    assert servers(parts[f"backend {routes['qwen']}"]) == ["gpu-a", "gpu-b"]
    assert servers(parts[f"backend {routes['org/llama:7b']}"]) == ["gpu-a"]
    assert servers(parts[f"backend {routes['mistral']}"]) == ["gpu-b"]
    assert servers(parts["backend be_any"]) == ["gpu-a", "gpu-b"]
    check = next(x for x in parts[f"backend {routes['org/llama:7b']}"] if "http-check send" in x)
    assert "uri /ready?model=org%2Fllama%3A7b " in check
    assert "uri /ready " in next(x for x in parts["backend be_any"] if "http-check send" in x)
    assert "default_backend be_any" in frontend
    too_large = next(x for x in frontend if x.startswith("http-request return status 413"))
    assert too_large.endswith(
        "if METH_POST !{ var(txn.model) -m found } { var(txn.body_unread) -m int gt 0 }"
    )
    assert "option http-buffer-request" in frontend
    assert "http-request set-var(txn.model) req.body,json_query('$.model') if METH_POST" in frontend


def test_retries_only_before_an_answer_and_streaming_timeouts() -> None:
    defaults = sections(haproxy_config(parse_cluster(DESCRIPTION)))["defaults"]
    assert "retry-on conn-failure empty-response 503" in defaults
    assert "option redispatch 1" in defaults and "retries 2" in defaults
    assert "timeout server 900s" in defaults and "timeout tunnel 1h" in defaults
    assert "default-server inter 500ms fall 3 rise 2" in defaults
    unavailable = next(x for x in defaults if x.startswith("http-error status 503"))
    assert unavailable.endswith("hdr Retry-After 2") and '"error":{"code":503' in unavailable


def test_the_api_key_is_a_variable_reference_never_a_value(monkeypatch: Any) -> None:
    monkeypatch.setenv("SERVER_CORE_API_KEY", "sk-secret")
    text = haproxy_config(parse_cluster(DESCRIPTION))
    assert 'hdr Authorization "Bearer ${SERVER_CORE_API_KEY}"' in text
    assert "sk-secret" not in text
    without = haproxy_config(parse_cluster({**DESCRIPTION, "api_key_env": None}))
    assert "Authorization" not in without


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"nodes": []}, "nodes"),
        ({"colour": "red"}, "colour"),
        ({"timeouts": {"server": "forever"}}, "timeouts.server"),
        ({"timeouts": {"serv": "1s"}}, "serv"),
        ({"check": {"fall": 0}}, "check.fall"),
        ({"listen": "8080"}, "listen"),
        ({"api_key_env": "not a name"}, "api_key_env"),
        ({"max_body_bytes": 1000}, "max_body_bytes"),
    ],
)
def test_a_wrong_description_names_the_key(change: dict[str, Any], names: str) -> None:
    with pytest.raises(ClusterConfigError, match=re.escape(names)):
        parse_cluster({**DESCRIPTION, **change})


@pytest.mark.parametrize(
    ("node", "names"),
    [
        ({"name": "a b", "address": "h:1", "models": ["m"]}, "nodes[0].name"),
        ({"name": "a", "address": "h:70000", "models": ["m"]}, "nodes[0].address"),
        ({"name": "a", "address": "h:1", "models": []}, "nodes[0].models"),
        ({"name": "a", "address": "h:1", "models": ["m }"]}, "nodes[0].models[0]"),
        ({"name": "a", "address": "h:1", "models": ["m"], "weight": 2}, "nodes[0]"),
    ],
)
def test_a_wrong_node_names_its_key(node: dict[str, Any], names: str) -> None:
    with pytest.raises(ClusterConfigError, match=re.escape(names)):
        parse_cluster({"nodes": [node]})


def test_repeated_node_names_are_refused() -> None:
    node = {"name": "a", "address": "h:1", "models": ["m"]}
    with pytest.raises(ClusterConfigError, match="repeat"):
        parse_cluster({"nodes": [node, node]})


def test_haproxy_accepts_the_generated_file(tmp_path: Path) -> None:
    out = tmp_path / "haproxy.cfg"
    description = tmp_path / "cluster.yaml"
    description.write_text(
        "listen: 127.0.0.1:18080\nstats: 127.0.0.1:18404\nlog: true\n"
        "nodes:\n  - {name: a, address: 127.0.0.2:8000, models: [qwen, 'x/y:1']}\n"
        "  - {name: b, address: 127.0.0.3:8000, models: [qwen]}\n"
    )
    assert main([str(description), "-o", str(out), "--check"]) == 0
    valid, output = check_with_haproxy(out)
    assert valid, output
    assert "server a 127.0.0.2:8000 check" in out.read_text()


def test_haproxy_refuses_a_broken_file(tmp_path: Path) -> None:
    """The check is real: a file HAProxy cannot load fails it."""
    broken = tmp_path / "broken.cfg"
    broken.write_text("frontend f\n    bind 127.0.0.1:1\n    use_backend nowhere\n")
    valid, output = check_with_haproxy(broken)
    assert not valid and output


def test_main_reports_a_bad_description_with_its_file(tmp_path: Path, capsys: Any) -> None:
    description = tmp_path / "cluster.json"
    description.write_text('{"nodes": [{"name": "a", "address": "nope", "models": ["m"]}]}')
    assert main([str(description)]) == 2
    assert f"{description}: nodes[0].address" in capsys.readouterr().err


def test_main_writes_to_stdout_without_output(tmp_path: Path, capsys: Any) -> None:
    description = tmp_path / "cluster.json"
    description.write_text('{"nodes": [{"name": "a", "address": "h:80", "models": ["m"]}]}')
    assert main([str(description)]) == 0
    assert "server a h:80 check" in capsys.readouterr().out
    assert main([str(description), "--check"]) == 1  # HAProxy cannot resolve "h"
    description.write_text('{"nodes": [{"name": "a", "address": "10.0.0.9:80", "models": ["m"]}]}')
    assert main([str(description), "--check"]) == 0  # checked on a scratch copy
    printed = capsys.readouterr()
    assert "server a 10.0.0.9:80 check" in printed.out and "valid" in printed.err
