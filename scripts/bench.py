#!/usr/bin/env python3
"""Benchmark: server_core vs a direct connection to the same fake llama-server.

Starts ``fake-llama-server`` (token delay, e.g. 20 ms x 64 tokens) and
``twistd -n server-core`` in front of it as child processes, then for each
concurrency level runs the same streams direct and through server_core, in the
same run, and prints what server_core adds:

- time to first token p50/p99 (proxied minus direct; levels under 16 streams run
  several rounds so every percentile rests on at least 16 streams),
- inter-event gap p50/p99 (proxied minus direct),
- server_core CPU microseconds per relayed event (from /proc),
- server_core RSS per open stream (RSS with N streams open minus idle RSS, / N).

Usage: python scripts/bench.py [--levels 1,16,64,128] [--tokens 64] [--token-delay 20]
                               [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_line(proc: subprocess.Popen[str], pattern: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    regex = re.compile(pattern)
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process exited before printing {pattern!r}")
        if regex.search(line):
            return line
    raise RuntimeError(f"timed out waiting for {pattern!r}")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def run_level(url: str, n: int, tokens: int, server_pid: int | None) -> dict[str, Any]:
    """Run n concurrent streams against url; returns timings (and server usage)."""
    from twisted.internet import defer, task
    from twisted.web.client import HTTPConnectionPool

    from harness._process import rss_kib
    from harness.client import stream_request

    body = {
        "model": "fake",
        "messages": [{"role": "user", "content": "benchmark"}],
        "max_tokens": tokens,
        "stream": True,
        "ignore_eos": True,
    }

    async def main(reactor: Any) -> dict[str, Any]:
        pool = HTTPConnectionPool(reactor, persistent=False)
        open_rss: list[int] = []
        half = {"seen": 0}
        sampled: defer.Deferred[None] = defer.Deferred()

        def on_event(event: Any, t: float) -> None:
            half["seen"] += 1
            # Sample RSS once, when every stream is in the middle of its body.
            if server_pid and not sampled.called and half["seen"] >= n * tokens // 2:
                open_rss.append(rss_kib(server_pid, default=0))
                sampled.callback(None)

        cpu0 = cpu_seconds(server_pid) if server_pid else 0.0
        results: list[Any] = []
        # Small levels run several rounds so their percentiles rest on >= 16 streams.
        for _ in range(max(1, 16 // n)):
            results += await defer.gatherResults(
                [
                    defer.ensureDeferred(
                        stream_request(url, body, timeout=120, pool=pool, on_event=on_event)
                    )
                    for _ in range(n)
                ]
            )
        cpu1 = cpu_seconds(server_pid) if server_pid else 0.0
        await pool.closeCachedConnections()
        await task.deferLater(reactor, 0.05, lambda: None)
        ttft = [r.ttft for r in results if r.ttft is not None]
        gaps = [g for r in results for g in r.gaps]
        events = sum(len(r.chunks) + 1 for r in results)
        outcomes = sorted({r.outcome for r in results})
        return {
            "ttft": ttft,
            "gaps": gaps,
            "events": events,
            "outcomes": outcomes,
            "cpu": cpu1 - cpu0,
            "open_rss": open_rss[0] if open_rss else None,
        }

    return _run_reactor(main)


def _run_reactor(fn: Any) -> Any:
    """Run one coroutine on a reactor that is started once and driven in a thread-free way."""
    from twisted.internet import defer, reactor

    result: dict[str, Any] = {}

    def go() -> None:
        d = defer.ensureDeferred(fn(reactor))

        def done(value: Any) -> None:
            result["value"] = value
            reactor.stop()

        def failed(failure: Any) -> None:
            result["error"] = failure
            reactor.stop()

        d.addCallbacks(done, failed)

    # A Twisted reactor cannot be restarted, so each level runs in a fresh interpreter.
    reactor.callWhenRunning(go)
    reactor.run()
    if "error" in result:
        result["error"].raiseException()
    return result["value"]


def level_in_subprocess(url: str, n: int, tokens: int, server_pid: int | None) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--_level",
        json.dumps({"url": url, "n": n, "tokens": tokens, "server_pid": server_pid}),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"level run failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    from harness._process import rss_kib

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,16,64,128")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--token-delay", type=float, default=20.0, help="ms per token")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--_level", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._level:
        spec = json.loads(args._level)
        print(json.dumps(run_level(spec["url"], spec["n"], spec["tokens"], spec["server_pid"])))
        return 0

    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    tmp = Path(tempfile.mkdtemp(prefix="server-core-bench-"))
    model = tmp / "bench.gguf"
    model.write_bytes(b"GGUF")
    fake_port, port = free_port(), free_port()
    fake = subprocess.Popen(
        [sys.executable, "-m", "harness.fake_llama", "-m", str(model), "-a", "fake",
         "--port", str(fake_port), "-np", str(max(levels)),
         "--fault", f"token_delay={args.token_delay}ms"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    config = tmp / "bench.yaml"
    config.write_text(
        f"external:\n  - alias: fake\n    url: http://127.0.0.1:{fake_port}\n"
        "server:\n  keepalive_interval: 15\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "server-core", "--config", str(config), "--port",
         f"tcp:{port}:interface=127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    rows: list[dict[str, Any]] = []
    try:
        wait_for_line(fake, r"listening on http://")
        wait_for_line(server, r"server-core listening on")
        # Drain child output in the background so their pipes never fill up.
        for proc in (fake, server):
            subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
        # Warm up both paths (imports, pooled connections) before measuring.
        level_in_subprocess(f"http://127.0.0.1:{port}/v1/chat/completions", 2, 4, None)
        idle_rss = rss_kib(server.pid, default=0)
        direct_url = f"http://127.0.0.1:{fake_port}/v1/chat/completions"
        proxy_url = f"http://127.0.0.1:{port}/v1/chat/completions"
        for n in levels:
            print(f"[bench] {n} streams: direct ...", file=sys.stderr, flush=True)
            direct = level_in_subprocess(direct_url, n, args.tokens, None)
            print(f"[bench] {n} streams: server_core ...", file=sys.stderr, flush=True)
            proxied = level_in_subprocess(proxy_url, n, args.tokens, server.pid)
            row = {
                "streams": n,
                "outcomes": proxied["outcomes"],
                "direct_ttft_p50_ms": 1000 * pct(direct["ttft"], 50),
                "added_ttft_p50_ms": 1000 * (pct(proxied["ttft"], 50) - pct(direct["ttft"], 50)),
                "added_ttft_p99_ms": 1000 * (pct(proxied["ttft"], 99) - pct(direct["ttft"], 99)),
                "direct_gap_p50_ms": 1000 * pct(direct["gaps"], 50),
                "added_gap_p50_ms": 1000 * (pct(proxied["gaps"], 50) - pct(direct["gaps"], 50)),
                "added_gap_p99_ms": 1000 * (pct(proxied["gaps"], 99) - pct(direct["gaps"], 99)),
                "cpu_us_per_event": 1e6 * proxied["cpu"] / max(1, proxied["events"]),
                "rss_kib_per_stream": (
                    (proxied["open_rss"] - idle_rss) / n if proxied["open_rss"] else None
                ),
            }
            rows.append(row)
            print(
                f"[bench] {n} streams done: +ttft p50 {row['added_ttft_p50_ms']:.2f} ms, "
                f"+gap p50 {row['added_gap_p50_ms']:.3f} ms",
                file=sys.stderr,
                flush=True,
            )
    finally:
        for proc in (server, fake):
            proc.send_signal(signal.SIGTERM)
        for proc in (server, fake):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    if args.json:
        print(json.dumps({"tokens": args.tokens, "token_delay_ms": args.token_delay,
                          "idle_rss_kib": idle_rss, "levels": rows}, indent=2))  # fmt: skip
        return 0
    header = (
        f"{'streams':>7} {'+TTFT p50':>10} {'+TTFT p99':>10} {'+gap p50':>9} {'+gap p99':>9} "
        f"{'CPU us/ev':>9} {'KiB/stream':>10}  outcomes"
    )
    print(f"server_core vs direct, {args.tokens} tokens x {args.token_delay:g} ms (ms added)")
    print(header)
    for r in rows:
        per_stream = r["rss_kib_per_stream"]
        print(
            f"{r['streams']:>7} {r['added_ttft_p50_ms']:>10.2f} {r['added_ttft_p99_ms']:>10.2f} "
            f"{r['added_gap_p50_ms']:>9.3f} {r['added_gap_p99_ms']:>9.3f} "
            f"{r['cpu_us_per_event']:>9.1f} "
            f"{(f'{per_stream:.1f}' if per_stream is not None else '-'):>10}  "
            f"{','.join(r['outcomes'])}"
        )
    print(f"server_core idle RSS: {idle_rss} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
