#!/usr/bin/env python3
"""Benchmark: server_core beside its peers, all in front of the same fake llama-server.

Starts ``fake-llama-server`` (e.g. 20 ms per token) and, in front of it, server_core
(``twistd -n server-core``), nginx (Debian's, ``proxy_buffering off``), the LiteLLM proxy
(``litellm[proxy]``, tox env ``bench``) and a raw-Twisted byte pass-through (the floor,
``scripts/bench_floor.py``); see ``scripts/bench_peers.py``. A peer that cannot run here is
reported as "not available: <why>". Rounds are interleaved (direct, server_core, nginx,
litellm, floor, then again), each peer's round runs in a fresh client process, and every
figure is the median over rounds (default 5) of that round's value, a difference or
ratio to direct taken within the same round:

- server CPU per 1-token stream at c=16, and per relayed event at c=16: the difference
  between 64-token and 1-token streams, (cpu64 - cpu1) / (events64 - events1) per
  stream; CPU is the proxy's whole process tree (nginx master and worker, LiteLLM and any
  children), from ``/proc/<pid>/task/*/schedstat`` (nanoseconds) for a process whose
  threads all lived through the measurement, else utime+stime from ``/proc/<pid>/stat``
  (10 ms ticks, too coarse for nginx alone; ``--cpu-source stat`` uses only these);
- added TTFT p50/p99 at c=1, and in bursts of 1/16/64/256 streams started at once and in
  a staggered variant (stream i starts at i x ``--stagger`` ms);
- non-stream requests/s at c=16, as a ratio to direct;
- KiB per open stream: (RSS of the tree with N streams open - idle RSS) / N, measured
  once per run before anything else (after two warm-up streams): a process that has
  served a 256-stream burst keeps that memory, and N streams later fit into it.

It prints markdown tables and writes a PNG of the TTFT and inter-event gap distributions.

Usage: python scripts/bench.py [--quick] [--rounds 5] [--peers direct,server_core,...]
                               [--png scripts/out/bench.png] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

CLK_TCK = os.sysconf("SC_CLK_TCK")
PEERS = ("direct", "server_core", "nginx", "litellm", "floor")
BURSTS = (1, 16, 64, 256)
STAGGERED = (16, 64, 256)


# ---------------------------------------------------------------- pure parts


def pct(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (NaN for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are numbers (None and NaN are left out)."""
    kept = [v for v in values if v is not None and v == v]
    return statistics.median(kept) if kept else None


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return value / base


def difference(value: float | None, base: float | None) -> float | None:
    if value is None or base is None:
        return None
    return value - base


def per_event_cpu(cpu1: float | None, ev1: float | None, cpu64: float | None,
                  ev64: float | None) -> float | None:  # fmt: skip
    """CPU per relayed event from per-stream CPU and events of short and long streams."""
    if None in (cpu1, ev1, cpu64, ev64) or ev64 == ev1:  # type: ignore[comparison-overlap]
        return None
    return (cpu64 - cpu1) / (ev64 - ev1)  # type: ignore[operator]


def summarize(rounds: list[dict[str, dict[str, Any]]], peers: Sequence[str]) -> dict[str, Any]:
    """Per peer, the median over rounds of each figure (differences/ratios per round)."""
    out: dict[str, Any] = {}
    for name in peers:
        per_round: dict[str, list[float | None]] = {}

        def put(key: str, value: float | None, acc: dict[str, list[float | None]] = per_round):
            acc.setdefault(key, []).append(value)

        for rnd in rounds:
            got, base = rnd.get(name), rnd.get("direct")
            if got is None:
                continue
            put("cpu1_us", _scaled(got.get("cpu1"), 1e6))
            event = per_event_cpu(
                got.get("cpu1"), got.get("ev1"), got.get("cpu64"), got.get("ev64")
            )
            put("cpu_event_us", _scaled(event, 1e6))
            put("kib_stream", got.get("kib_stream"))
            put("rps", got.get("rps"))
            if base is None:
                continue
            put("rps_ratio", ratio(got.get("rps"), base.get("rps")))
            for key in ("c1", *(f"b{n}" for n in BURSTS), *(f"s{n}" for n in STAGGERED)):
                mine, theirs = got.get("ttft", {}).get(key), base.get("ttft", {}).get(key)
                if not mine or not theirs:
                    continue
                for q in (50, 99):
                    put(f"{key}_p{q}_ms", 1000 * (pct(mine, q) - pct(theirs, q)))
                put(f"{key}_max_ms", 1000 * max(mine))
        out[name] = {key: median(values) for key, values in per_round.items()}
        out[name]["rounds"] = sum(1 for rnd in rounds if name in rnd)
    return out


def _scaled(value: float | None, by: float) -> float | None:
    return None if value is None else value * by


def fmt(value: float | None, spec: str, signed: bool = False) -> str:
    if value is None:
        return "—"
    return format(value, ("+" if signed else "") + spec)


def markdown_table(summary: dict[str, Any], missing: dict[str, str]) -> str:
    """The headline table (one row per peer) and the burst table, as markdown."""
    head = (
        "| | CPU per 1-token stream (c=16) | CPU per relayed event (c=16) | added TTFT p50, c=1 "
        "| added TTFT p99, c=1 | non-stream req/s, c=16 (× direct) | KiB per open stream |\n"  # noqa: RUF001
        "|---|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for name, s in summary.items():
        direct = name == "direct"
        rows.append(
            f"| {name} | {'—' if direct else fmt(s.get('cpu1_us'), '.0f') + ' µs'} "
            f"| {'—' if direct else fmt(s.get('cpu_event_us'), '.1f') + ' µs'} "
            f"| {'—' if direct else fmt(s.get('c1_p50_ms'), '.2f', True) + ' ms'} "
            f"| {'—' if direct else fmt(s.get('c1_p99_ms'), '.2f', True) + ' ms'} "
            f"| {fmt(s.get('rps_ratio'), '.2f')} ({fmt(s.get('rps'), '.0f')}/s) "
            f"| {'—' if direct else fmt(s.get('kib_stream'), '.1f')} |"
        )
    for name, why in missing.items():
        why = " ".join(why.replace("|", "/").split())
        rows.append(f"| {name} | not available: {why} | | | | | |")
    burst_cols = [f"b{n}" for n in BURSTS] + [f"s{n}" for n in STAGGERED]
    burst_names = [f"burst {n}" for n in BURSTS] + [f"staggered {n}" for n in STAGGERED]
    bhead = (
        "| added TTFT p50 / p99 (ms); max TTFT (ms) | " + " | ".join(burst_names) + " |\n"
        "|---|" + "---:|" * len(burst_cols) + "\n"
    )
    brows = []
    for name, s in summary.items():
        cells = []
        for key in burst_cols:
            if name == "direct":
                cells.append(f"max {fmt(s.get(f'{key}_max_ms'), '.0f')}")
            else:
                cells.append(
                    f"{fmt(s.get(f'{key}_p50_ms'), '.1f', True)} / "
                    f"{fmt(s.get(f'{key}_p99_ms'), '.1f', True)}; "
                    f"max {fmt(s.get(f'{key}_max_ms'), '.0f')}"
                )
        brows.append(f"| {name} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n\n" + bhead + "\n".join(brows) + "\n"


# ---------------------------------------------------------------- /proc readings


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (nginx's worker, LiteLLM's children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(pid: int, source: str = "schedstat") -> float:
    """CPU time of one process (all its threads)."""
    if source == "schedstat":
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                    total += int(stat.read().split()[0])
            except (OSError, IndexError, ValueError):
                continue
        return total / 1e9
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_snapshot(root: int | None, source: str) -> dict[int, tuple[float, dict[str, int]]]:
    """Per process of the tree: utime+stime (s) and each live thread's schedstat (ns)."""
    snap: dict[int, tuple[float, dict[str, int]]] = {}
    if root is None:
        return snap
    for pid in tree_pids(root):
        try:
            ticks = cpu_seconds(pid, "stat")
            threads: dict[str, int] = {}
            if source == "schedstat":
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{tid}/schedstat") as stat:
                        threads[tid] = int(stat.read().split()[0])
        except (OSError, IndexError, ValueError):
            continue
        snap[pid] = (ticks, threads)
    return snap


def cpu_between(before: dict[int, tuple[float, dict[str, int]]],
                after: dict[int, tuple[float, dict[str, int]]]) -> float:  # fmt: skip
    """CPU seconds the tree used between two snapshots.

    A process whose threads all lived through the interval counts its threads' schedstat
    (nanoseconds); one that lost or gained threads counts utime+stime (10 ms ticks, but
    it keeps the time of threads that exited, which schedstat forgets: LiteLLM's thread
    pool); a process born in the interval counts all its time; one that died is lost."""
    total = 0.0
    for pid, (ticks, threads) in after.items():
        if pid not in before:
            total += ticks
            continue
        ticks0, threads0 = before[pid]
        if threads and threads.keys() == threads0.keys():
            total += sum(threads[t] - threads0[t] for t in threads) / 1e9
        else:
            total += ticks - ticks0
    return total


def tree_rss_kib(root: int | None) -> int:
    from harness._process import rss_kib

    if root is None:
        return 0
    total = 0
    for pid in tree_pids(root):
        try:
            total += rss_kib(pid, default=0)
        except OSError:
            continue
    return total


# ---------------------------------------------------------------- one peer's round (client)


def peer_round(spec: dict[str, Any]) -> dict[str, Any]:
    """Every measurement of one round against one peer, in this (fresh) process."""
    from twisted.internet import defer, task
    from twisted.web.client import HTTPConnectionPool

    from harness.client import stream_request

    url = spec["base"] + "/v1/chat/completions"
    pid, source, sizes = spec["pid"], spec["cpu_source"], spec["sizes"]

    def body(tokens: int, stream: bool = True) -> dict[str, Any]:
        return {
            "model": "fake",
            "messages": [{"role": "user", "content": "benchmark"}],
            "max_tokens": tokens,
            "stream": stream,
            "ignore_eos": True,
        }

    async def main(reactor: Any) -> dict[str, Any]:
        pool = HTTPConnectionPool(reactor, persistent=False)
        outcomes: set[str] = set()

        async def one(tokens: int, stream: bool = True, delay: float = 0.0,
                      on_event: Any = None) -> Any:  # fmt: skip
            if delay:
                await task.deferLater(reactor, delay, lambda: None)
            result = await stream_request(
                url, body(tokens, stream), timeout=120, pool=pool,
                headers=spec.get("headers"), on_event=on_event,
            )  # fmt: skip
            outcomes.add(result.outcome)
            return result

        async def closed(n: int, tokens: int, stream: bool = True) -> list[Any]:
            """``total`` requests, ``n`` at a time (a closed loop of n clients)."""
            results: list[Any] = []

            async def client(count: int) -> None:
                for _ in range(count):
                    results.append(await one(tokens, stream))

            share = [sizes["total"] // n + (1 if i < sizes["total"] % n else 0) for i in range(n)]
            await defer.gatherResults([defer.ensureDeferred(client(k)) for k in share])
            return results

        def events(results: list[Any]) -> float:
            return sum(r.n_events for r in results) / max(1, len(results))

        out: dict[str, Any] = {"ttft": {}}
        if sizes.get("memory_only"):
            # Memory per open stream, on a peer that has served only a couple of streams:
            # after the bursts its allocator keeps their memory, and N more streams would
            # fit into it without the RSS growing.
            for _ in range(2):
                await one(4)
            await task.deferLater(reactor, 0.3, lambda: None)
            idle = tree_rss_kib(pid)
            n, seen, sample = sizes["hold"], [0], []

            def on_event(event: Any, t: float) -> None:
                seen[0] += 1
                if not sample and seen[0] >= n * sizes["tokens"] // 2:
                    sample.append(tree_rss_kib(pid))

            await defer.gatherResults(
                [defer.ensureDeferred(one(sizes["tokens"], on_event=on_event)) for _ in range(n)]
            )
            out["kib_stream"] = (sample[0] - idle) / n if sample else None
            out["idle_kib"] = idle
            out["outcomes"] = sorted(outcomes)
            return out
        # CPU per stream: 1-token and 64-token streams, 16 at a time.
        for tokens, key in ((1, "1"), (sizes["tokens"], "64")):
            sizes["total"] = sizes["cpu_streams"] if tokens == 1 else sizes["long_streams"]
            cpu0 = cpu_snapshot(pid, source)
            results = await closed(16, tokens)
            cpu = cpu_between(cpu0, cpu_snapshot(pid, source))
            out[f"cpu{key}"] = cpu / len(results) if pid else None
            out[f"ev{key}"] = events(results)
            if tokens != 1:
                out["gaps"] = [g for r in results for g in r.gaps]
        # TTFT at c=1.
        results = [await one(4) for _ in range(sizes["c1"])]
        out["ttft"]["c1"] = [r.ttft for r in results if r.ttft is not None]
        # Bursts (all at once) and staggered arrivals.
        for n in BURSTS:
            results = await defer.gatherResults([defer.ensureDeferred(one(4)) for _ in range(n)])
            out["ttft"][f"b{n}"] = [r.ttft for r in results if r.ttft is not None]
            await task.deferLater(reactor, 0.2, lambda: None)
        for n in STAGGERED:
            step = spec["stagger_ms"] / 1000
            results = await defer.gatherResults(
                [defer.ensureDeferred(one(4, delay=i * step)) for i in range(n)]
            )
            out["ttft"][f"s{n}"] = [r.ttft for r in results if r.ttft is not None]
            await task.deferLater(reactor, 0.2, lambda: None)
        # Non-stream requests/s at c=16.
        sizes["total"] = sizes["nonstream"]
        started = time.monotonic()
        results = await closed(16, 1, stream=False)
        out["rps"] = len(results) / (time.monotonic() - started)
        out["outcomes"] = sorted(outcomes)
        await pool.closeCachedConnections()
        return out

    return _run_reactor(main)


def _run_reactor(fn: Any) -> Any:
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

    reactor.callWhenRunning(go)
    reactor.run()
    if "error" in result:
        result["error"].raiseException()
    return result["value"]


def round_in_subprocess(spec: dict[str, Any]) -> dict[str, Any]:
    """One peer's round in a fresh interpreter (a Twisted reactor cannot be restarted)."""
    cmd = [sys.executable, __file__, "--_round", json.dumps(spec)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"round against {spec['base']} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- picture


def write_png(path: Path, rounds: list[dict[str, dict[str, Any]]], peers: Sequence[str],
              title: str) -> str | None:  # fmt: skip
    """ECDFs of TTFT (c=1) and inter-event gaps (c=16) per peer; None, or why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"matplotlib is not installed ({exc})"
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in peers:
        ttft = [1000 * t for rnd in rounds if name in rnd for t in rnd[name]["ttft"]["c1"]]
        # Token gaps only: the role chunk, the finish chunk and [DONE] follow their
        # predecessor within microseconds and would squash the interesting part.
        gaps = [
            1000 * g for rnd in rounds if name in rnd for g in rnd[name].get("gaps", []) if g > 1e-3
        ]
        for axis, values in ((left, ttft), (right, gaps)):
            if values:
                ordered = sorted(values)
                ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
                axis.step(ordered, ys, where="post", label=f"{name} (n={len(ordered)})")
    left.set_title("time to first token, c=1")
    left.set_xscale("log")
    left.set_xlabel("ms (log scale)")
    right.set_title("inter-event gap between tokens (> 1 ms), c=16")
    right.set_xscale("log")
    right.set_xlabel("ms (log scale)")
    for axis in (left, right):
        axis.set_ylabel("fraction ≤ x")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle(textwrap.fill(title, 150), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return None


# ---------------------------------------------------------------- driver


def main() -> int:
    import bench_peers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run: 1 round, few")
    parser.add_argument("--rounds", type=int, default=None, help="default 5 (1 with --quick)")
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--tokens", type=int, default=64, help="tokens of a long stream")
    parser.add_argument("--token-delay", type=float, default=20.0, help="ms per token")
    parser.add_argument("--stagger", type=float, default=5.0, help="ms between staggered starts")
    parser.add_argument("--cpu-source", choices=("schedstat", "stat"), default="schedstat")
    parser.add_argument("--png", default=str(ROOT / "scripts" / "out" / "bench.png"))
    parser.add_argument("--json", help="also write the raw rounds and the summary here")
    parser.add_argument("--replot", help="only redraw the PNG from a --json file")
    parser.add_argument("--_round", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.replot:
        saved = json.loads(Path(args.replot).read_text())
        names = list(saved["summary"])
        why = write_png(Path(args.png), saved["rounds"], names, saved["conditions"])
        print(f"picture: {args.png}" if why is None else f"picture: not written: {why}")
        return 0 if why is None else 1
    if args._round:
        print(json.dumps(peer_round(json.loads(args._round))))
        return 0

    rounds_n = args.rounds or (1 if args.quick else 5)
    sizes = (
        {"cpu_streams": 64, "long_streams": 16, "c1": 8, "nonstream": 64, "hold": 16}
        if args.quick
        else {"cpu_streams": 256, "long_streams": 32, "c1": 32, "nonstream": 256, "hold": 64}
    )
    sizes["tokens"] = args.tokens
    wanted = [p.strip() for p in args.peers.split(",") if p.strip()]
    if "direct" not in wanted:
        wanted.insert(0, "direct")
    tmp = Path(tempfile.mkdtemp(prefix="server-core-bench-"))
    missing: dict[str, str] = {}
    peers: dict[str, bench_peers.Peer] = {}
    log = sys.stderr
    try:
        fake = bench_peers.start_fake(tmp, args.token_delay, max(BURSTS) + 16)
        peers["direct"] = fake
        fake_port = int(fake.base.rsplit(":", 1)[1])
        starters = {
            "server_core": lambda: bench_peers.start_server_core(tmp, fake.base),
            "nginx": lambda: bench_peers.start_nginx(tmp, fake_port),
            "litellm": lambda: bench_peers.start_litellm(tmp, fake.base),
            "floor": lambda: bench_peers.start_floor(tmp, fake_port),
        }
        for name in wanted[1:]:
            if name not in starters:
                missing[name] = "unknown peer"
                continue
            print(f"[bench] starting {name} ...", file=log, flush=True)
            try:
                peers[name] = starters[name]()
            except bench_peers.Unavailable as exc:
                missing[name] = str(exc)
                print(f"[bench] {name}: not available: {exc}", file=log, flush=True)
        order = [name for name in wanted if name in peers]
        # Memory first, once per run: a peer that has seen a 256-stream burst keeps its memory.
        memory: dict[str, dict[str, Any]] = {}
        for name in order:
            if peers[name].pid is None:
                continue
            print(f"[bench] {name}: memory with {sizes['hold']} open streams ...", file=log)
            try:
                memory[name] = round_in_subprocess(
                    _spec(peers[name], args, {**sizes, "memory_only": 1})
                )
            except RuntimeError as exc:
                print(f"[bench] {name} memory run failed: {exc}", file=log, flush=True)
        # Warm every path once (imports, pooled connections, lazy setup) before measuring.
        warm = {"cpu_streams": 4, "long_streams": 2, "c1": 1, "nonstream": 4, "hold": 2,
                "tokens": 4}  # fmt: skip
        for name in order:
            try:
                round_in_subprocess(_spec(peers[name], args, warm))
            except RuntimeError as exc:
                missing[name] = f"failed its warm-up: {str(exc)[-300:]}"
                print(f"[bench] {name}: not available: {missing[name]}", file=log, flush=True)
        order = [name for name in order if name not in missing]
        rounds: list[dict[str, dict[str, Any]]] = []
        for r in range(rounds_n):
            rnd: dict[str, dict[str, Any]] = {}
            for name in order:
                print(f"[bench] round {r + 1}/{rounds_n}: {name} ...", file=log, flush=True)
                try:
                    rnd[name] = round_in_subprocess(_spec(peers[name], args, sizes))
                except RuntimeError as exc:
                    print(f"[bench] {name} round {r + 1} failed: {exc}", file=log, flush=True)
            rounds.append(rnd)
    finally:
        for peer in reversed(list(peers.values())):
            peer.stop()
    summary = summarize(rounds, order)
    for name, got in memory.items():
        summary[name]["kib_stream"] = got.get("kib_stream")
        summary[name]["idle_kib"] = got.get("idle_kib")
    load = os.getloadavg()
    conditions = (
        f"{rounds_n} interleaved round(s), medians; fake upstream {args.token_delay:g} ms/token, "
        f"long streams {args.tokens} tokens; {os.cpu_count()} CPUs, load average "
        f"{load[0]:.2f} at the end; CPU from {args.cpu_source}; "
        + "; ".join(f"{p.name}: {p.note}" for p in peers.values() if p.note)
    )
    print(f"\n{conditions}\n")
    print(markdown_table(summary, missing))
    outcomes = {name: sorted({o for rnd in rounds if name in rnd for o in rnd[name]["outcomes"]})
                for name in order}  # fmt: skip
    print("outcomes: " + "; ".join(f"{k}: {','.join(v)}" for k, v in outcomes.items()))
    why = write_png(Path(args.png), rounds, order, conditions)
    print(f"picture: {args.png}" if why is None else f"picture: not written: {why}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"conditions": conditions, "summary": summary, "missing": missing,
             "memory": memory, "rounds": rounds}, indent=1))  # fmt: skip
    return 0


def _spec(peer: Any, args: Any, sizes: dict[str, int]) -> dict[str, Any]:
    return {
        "base": peer.base,
        "pid": peer.pid,
        "cpu_source": args.cpu_source,
        "sizes": dict(sizes),
        "stagger_ms": args.stagger,
        "headers": peer.headers,
    }


if __name__ == "__main__":
    sys.exit(main())
