"""The processes ``scripts/bench.py`` measures: the fake upstream, server_core and its peers.

Each ``start_*`` returns a ``Peer`` (its name, base URL and the pid whose process tree is
the proxy) or raises ``Unavailable`` with the reason a peer cannot run here, which the
benchmark prints as "not available: <why>" instead of dropping the peer silently.

- ``direct``: the fake llama-server itself (the baseline every ratio is taken to);
- ``server_core``: ``twistd -n server-core`` with the fake as an external model;
- ``nginx``: Debian's nginx as a plain process, one worker, ``proxy_buffering off``,
  HTTP/1.1 with a keep-alive upstream, an access log like server_core's (to a file);
- ``litellm``: the LiteLLM proxy (``litellm[proxy]``, the tox env ``bench``) with the fake
  as the openai-compatible backend ``openai/fake``;
- ``floor``: ``scripts/bench_floor.py``, a raw Twisted byte pass-through.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


class Unavailable(Exception):
    """A peer cannot run here; the message says why."""


@dataclass
class Peer:
    name: str
    base: str
    pid: int | None  # root of the proxy's process tree; None for direct
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    note: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")


def _spawn(argv: list[str], log: Path, **kw: Any) -> subprocess.Popen[Any]:
    out = open(log, "ab")
    try:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, **kw)
    finally:
        out.close()


def wait_http(url: str, proc: subprocess.Popen[Any], log: Path, timeout: float) -> None:
    """Poll ``url`` until it answers at all (any status), or fail with the log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"exited with {proc.returncode}: {_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise Unavailable(f"no answer on {url} within {timeout:g} s: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(lines[-3:])[-400:]


def start_fake(tmp: Path, token_delay_ms: float, slots: int) -> Peer:
    model = tmp / "bench.gguf"
    model.write_bytes(b"GGUF")
    port = free_port()
    log = tmp / "fake.log"
    proc = _spawn(
        [sys.executable, "-m", "harness.fake_llama", "-m", str(model), "-a", "fake",
         "--port", str(port), "-np", str(slots), "-c", str(slots * 512),
         "--fault", f"token_delay={token_delay_ms}ms"],
        log, env=_env(),
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/health", proc, log, 30)
    return Peer("direct", f"http://127.0.0.1:{port}", None, [proc])


def start_server_core(tmp: Path, upstream: str) -> Peer:
    port = free_port()
    config = tmp / "server_core.yaml"
    config.write_text(
        f"external:\n  - alias: fake\n    url: {upstream}\nserver:\n  keepalive_interval: 15\n"
    )
    log = tmp / "server_core.log"
    proc = _spawn(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "server-core", "--config", str(config), "--port",
         f"tcp:{port}:interface=127.0.0.1"],
        log, env=_env(),
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/health", proc, log, 60)
    return Peer("server_core", f"http://127.0.0.1:{port}", proc.pid, [proc])


def nginx_config(tmp: Path, port: int, upstream_port: int, user: str | None) -> str:
    """The nginx.conf the benchmark runs: one worker, no buffering, keep-alive upstream."""
    user_line = f"user {user};\n" if user else ""
    return f"""{user_line}worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {tmp}/nginx-access.log;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    upstream fake {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def start_nginx(tmp: Path, upstream_port: int) -> Peer:
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if binary is None:
        raise Unavailable("no nginx binary (scripts/install-nginx installs Debian's)")
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_config(tmp, port, upstream_port, "root" if os.geteuid() == 0 else None))
    log = tmp / "nginx.log"
    proc = _spawn([binary, "-c", str(conf), "-p", str(tmp)], log)
    wait_http(f"http://127.0.0.1:{port}/health", proc, log, 20)
    version = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return Peer("nginx", f"http://127.0.0.1:{port}", proc.pid, [proc], version.stderr.strip())


def start_litellm(tmp: Path, upstream: str) -> Peer:
    binary = shutil.which("litellm", path=str(Path(sys.executable).parent)) or shutil.which(
        "litellm"
    )
    if binary is None:
        raise Unavailable(
            f"no litellm executable beside {sys.executable} (run through `tox -e bench`)"
        )
    port = free_port()
    key = "sk-bench-" + secrets.token_hex(16)  # the proxy refuses to start without a key
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: fake\n    litellm_params:\n"
        f"      model: openai/fake\n      api_base: {upstream}/v1\n      api_key: none\n"
        "litellm_settings:\n  telemetry: false\n"
        f"general_settings:\n  master_key: {key}\n"
    )
    log = tmp / "litellm.log"
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR")
    proc = _spawn(
        [binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
         "--num_workers", "1"],
        log, env=env,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/health/liveliness", proc, log, 180)
    except Unavailable:
        Peer("litellm", "", None, [proc]).stop()
        raise
    try:
        from importlib.metadata import version

        note = f"litellm {version('litellm')}"
    except Exception:
        note = "litellm"
    headers = {"Authorization": f"Bearer {key}"}
    return Peer("litellm", f"http://127.0.0.1:{port}", proc.pid, [proc], note, headers)


def start_floor(tmp: Path, upstream_port: int) -> Peer:
    port = free_port()
    log = tmp / "floor.log"
    proc = _spawn(
        [sys.executable, str(SCRIPTS / "bench_floor.py"), "--port", str(port),
         "--to", f"127.0.0.1:{upstream_port}"],
        log, env=_env(),
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/health", proc, log, 30)
    return Peer("floor", f"http://127.0.0.1:{port}", proc.pid, [proc], "raw Twisted pass-through")
