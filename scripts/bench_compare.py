#!/usr/bin/env python3
"""Benchmark this checkout's server_core against another checkout of it, in one run.

    git worktree add /tmp/baseline <commit>
    python scripts/bench_compare.py --baseline /tmp/baseline [--rounds 5]

One fake llama-server, and one ``twistd -n server-core`` per checkout in front of it
(each run from its own source tree). Each round measures, in a shuffled order, the
direct connection and both servers: CPU per 1-token stream and per relayed event at 16
concurrent streams (server CPU from /proc), and the time to first token at 1 stream.
Rounds are interleaved so a noisy neighbour hits every side alike; medians are printed
with the ratio current / baseline (below 1.0: this checkout is cheaper or faster).
"""

from __future__ import annotations

import argparse
import random
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import (
    ROOT,
    free_port,
    level_in_subprocess,
    pct,
    wait_for_line,
)


def start(argv: list[str], root: Path, pattern: str) -> subprocess.Popen[str]:
    env = {"PYTHONPATH": str(root), "PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=tempfile.gettempdir())  # fmt: skip
    wait_for_line(proc, pattern)
    subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
    return proc


def server(root: Path, fake_port: int, tmp: Path) -> tuple[subprocess.Popen[str], str]:
    config = tmp / f"bench-{free_port()}.yaml"
    config.write_text(f"external:\n  - alias: fake\n    url: http://127.0.0.1:{fake_port}\n")
    port = free_port()
    argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
            "--pidfile=", "server-core", "--config", str(config), "--port",
            f"tcp:{port}:interface=127.0.0.1"]  # fmt: skip
    return start(argv, root, r"server-core listening on"), f"http://127.0.0.1:{port}"


def measure(url: str, pid: int | None) -> dict[str, float]:
    # /proc counts CPU in clock ticks (10 ms): enough streams per figure to make a tick small.
    chat = url + "/v1/chat/completions"
    one = [level_in_subprocess(chat, 16, 1, pid) for _ in range(8)]
    many = [level_in_subprocess(chat, 16, 64, pid) for _ in range(2)]
    single = level_in_subprocess(chat, 1, 16, pid)
    cpu_one = sum(r["cpu"] for r in one) / len(one)
    events_one = sum(r["events"] for r in one) / len(one)
    cpu_many = sum(r["cpu"] for r in many) / len(many)
    events_many = sum(r["events"] for r in many) / len(many)
    return {
        "cpu_us_per_1_token_stream": 1e6 * cpu_one / 16,
        "cpu_us_per_event": 1e6 * (cpu_many - cpu_one) / max(1.0, events_many - events_one),
        "ttft_p50_ms_c1": 1000 * pct(single["ttft"], 50),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1, help="seeds the order within rounds")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="server-core-compare-"))
    model = tmp / "bench.gguf"
    model.write_bytes(b"GGUF")
    fake_port = free_port()
    fake = start([sys.executable, "-m", "harness.fake_llama", "-m", str(model), "-a", "fake",
                  "--port", str(fake_port), "-np", "32", "--fault", "token_delay=20ms"],
                 ROOT, r"listening on http://")  # fmt: skip
    current, current_url = server(ROOT, fake_port, tmp)
    baseline, baseline_url = server(args.baseline.resolve(), fake_port, tmp)
    sides: dict[str, tuple[str, int | None]] = {
        "direct": (f"http://127.0.0.1:{fake_port}", None),
        "current": (current_url, current.pid),
        "baseline": (baseline_url, baseline.pid),
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    order = random.Random(args.seed)
    try:
        for url, pid in sides.values():
            level_in_subprocess(url + "/v1/chat/completions", 2, 4, pid)  # warm up
        for r in range(args.rounds):
            names = list(sides)
            order.shuffle(names)
            for name in names:
                print(f"[compare] round {r + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
                results[name].append(measure(*sides[name]))
    finally:
        for proc in (current, baseline, fake):
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
    report(results)
    return 0


def report(results: dict[str, list[dict[str, float]]]) -> None:
    def median(name: str, key: str) -> float:
        return statistics.median(row[key] for row in results[name])

    print(f"medians of {len(results['current'])} interleaved rounds (fake: 20 ms per token)")
    print(f"{'':28} {'direct':>9} {'current':>9} {'baseline':>9} {'cur/base':>9}")
    rows: list[tuple[str, Any]] = [
        ("CPU us per 1-token stream", "cpu_us_per_1_token_stream"),
        ("CPU us per relayed event", "cpu_us_per_event"),
        ("TTFT p50 ms, 1 stream", "ttft_p50_ms_c1"),
    ]
    for label, key in rows:
        cur, base = median("current", key), median("baseline", key)
        direct = median("direct", key) if key.startswith("ttft") else float("nan")
        print(f"{label:28} {direct:9.2f} {cur:9.2f} {base:9.2f} {cur / base:9.2f}")


if __name__ == "__main__":
    sys.exit(main())
