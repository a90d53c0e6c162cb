#!/usr/bin/env python3
"""Benchmark: arrival-order scheduling versus batching by model, in the same run.

Three aliases of one fake GGUF on one slot (``max_loaded: 1``), each fake llama-server
taking ``--load-delay`` to load (like the real 135M model's 0.5-1 s), and N clients
sending a seeded random mix of the three. The same workload runs twice against
server_core with managed fake llama-servers, once with ``max_wait: 0`` (plain arrival
order: a swap per change of model in the queue) and once with ``max_wait`` (batching by
model), and the script prints for each: process starts, changes of model in the arrival
sequence, starts per change, total time, and the wait each request spent (time to its
response headers: the queue, a start when one was needed, and the first token) as
p50/p99/max. Every answer is checked for its model.

Usage: python scripts/bench_scheduler.py [--clients 12] [--requests 240] [--seed 16]
                                         [--load-delay 0.75] [--max-wait 30] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from twisted.internet import defer, task  # noqa: E402

from harness.client import stream_request  # noqa: E402
from server_core.config import parse_config  # noqa: E402
from server_core.service import make_service  # noqa: E402

ALIASES = ("alpha", "beta", "gamma")


def fake_executable(folder: Path) -> Path:
    """A fake llama-server spawned exactly like the real one (see tests/integration)."""
    script = folder / "llama-server"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from harness.fake_llama.cli import main\nsys.exit(main())\n"
    )
    script.chmod(0o755)
    return script


def config_text(folder: Path, max_wait: float, load_delay: float) -> str:
    model = folder / "shared.gguf"
    model.write_bytes(b"GGUF")
    lines = [
        "server:",
        "  listen: tcp:0:interface=127.0.0.1",
        "llama_server:",
        f"  executable: {fake_executable(folder)}",
        "  max_loaded: 1",
        "  start_timeout: 30",
        "  stop_grace: 2",
        "  max_queue: 1000",
        f"  max_wait: {max_wait}",
        "aliases:",
    ]
    for name in ALIASES:
        flags = ["--fault", f"load_delay={int(load_delay * 1000)}ms"]
        lines += [
            f"  - alias: {name}",
            f"    model: {model}",
            f"    context_params: {json.dumps(flags)}",
        ]
    return "\n".join(lines) + "\n"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def run_policy(reactor: Any, args: argparse.Namespace, max_wait: float) -> dict[str, Any]:
    """One policy: start server_core, replay the seeded workload, stop it."""
    folder = Path(tempfile.mkdtemp(prefix="bench-scheduler-"))
    config = parse_config(
        config_text(folder, max_wait, args.load_delay), file=str(folder / "c.yaml")
    )
    service = make_service(config, reactor)
    listener = list(service)[-1]
    service.startService()
    url = f"http://127.0.0.1:{(await listener.when_listening).getHost().port}/v1/chat/completions"
    rng = random.Random(args.seed)
    workload = [rng.choice(ALIASES) for _ in range(args.requests)]
    sent: list[tuple[float, str]] = []
    waits: list[float] = []
    wrong: list[str] = []
    began = reactor.seconds()

    async def client() -> None:
        while workload:
            name = workload.pop(0)
            body = {"model": name, "messages": [{"role": "user", "content": f"hi {name}"}],
                    "max_tokens": 4, "stream": True}  # fmt: skip
            sent.append((reactor.seconds(), name))
            result = await stream_request(url, body, timeout=600)
            if result.outcome != "done" or result.model != name:
                wrong.append(f"{name}: {result.summary()}")
            if result.t_headers is not None:
                waits.append(result.t_headers - result.t_start)

    await defer.gatherResults([defer.ensureDeferred(client()) for _ in range(args.clients)])
    total = reactor.seconds() - began
    context = service.routes._router.context
    starts, swaps = context.starts, context.swaps
    await service.stopService()
    order = [name for _, name in sorted(sent)]
    changes = sum(1 for before, after in itertools.pairwise(order) if before != after)
    return {
        "max_wait": max_wait,
        "starts": starts,
        "swaps": swaps,
        "alias_changes": changes,
        "starts_per_change": round(starts / max(changes, 1), 3),
        "total_s": round(total, 2),
        "wait_p50_s": round(percentile(waits, 50), 2),
        "wait_p99_s": round(percentile(waits, 99), 2),
        "wait_max_s": round(max(waits), 2),
        "wrong_answers": wrong,
    }


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"{args.clients} clients, {args.requests} requests over {len(ALIASES)} aliases, "
          f"max_loaded 1, load delay {args.load_delay:g} s, seed {args.seed}")  # fmt: skip
    head = ("policy", "starts", "changes", "starts/chg", "total s", "p50 s", "p99 s", "max s")
    print("  ".join(f"{h:>12}" for h in head))
    for row in rows:
        policy = "arrival" if row["max_wait"] == 0 else f"batch {row['max_wait']:g}s"
        keys = ("starts", "alias_changes", "starts_per_change", "total_s", "wait_p50_s",
                "wait_p99_s", "wait_max_s")  # fmt: skip
        cells = (policy, *(row[key] for key in keys))
        print("  ".join(f"{c!s:>12}" for c in cells))
        for line in row["wrong_answers"][:5]:
            print("    WRONG", line)
    arrival, batched = rows
    print(f"starts: {batched['starts']} vs {arrival['starts']} "
          f"({batched['starts'] / max(arrival['starts'], 1):.2f}x, target <= 0.25x); "
          f"total: {batched['total_s'] / max(arrival['total_s'], 1e-9):.2f}x (target <= 0.5x); "
          f"max wait {batched['wait_max_s']} s (target <= max_wait + one start)")  # fmt: skip


async def main(reactor: Any, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--requests", type=int, default=240)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--load-delay", type=float, default=0.75)
    parser.add_argument("--max-wait", type=float, default=30.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = [await run_policy(reactor, args, 0.0), await run_policy(reactor, args, args.max_wait)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        report(rows, args)
    if any(row["wrong_answers"] for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1:])))
