#!/usr/bin/env python3
"""Benchmark: what parsing a hostile JSON body at the size cap costs the event loop.

For each body shape at the body cap (10 MiB by default) it runs
``server_core.validation.parse_json_body`` and prints:

- the loop time: wall time of the call (the best of ``--repeat`` runs), which is the
  time the reactor is blocked, since the parse runs on it;
- the peak extra memory, traced with ``tracemalloc`` in a separate run (tracing slows
  the call down, which is why the time is measured without it), and that peak as a
  multiple of the body.

The targets of issue 13: at most 4x the body in extra memory and 100 ms of loop time.
Hostile shapes are refused before the parse; the legitimate ones show what a real
body at the cap costs. Exits 1 when a target is missed.

Usage: python scripts/bench_json_bounds.py [--cap-mib 10] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from collections.abc import Callable

from server_core.errors import BadRequest
from server_core.validation import MAX_JSON_VALUES, parse_json_body

MEMORY_TARGET = 4.0
TIME_TARGET_MS = 100.0


def _filled(
    cap: int, unit: bytes, head: bytes = b'{"model":"m","x":[', tail: bytes = b"0]}"
) -> bytes:
    """``head`` + as many ``unit`` as fit in ``cap`` + ``tail``."""
    return head + unit * ((cap - len(head) - len(tail)) // len(unit)) + tail


def shapes(cap: int) -> dict[str, bytes]:
    """Hostile and legitimate bodies of (about) ``cap`` bytes."""
    text = b"def f(a, b): return {a: [b, b]}, [a, b]  # brackets, commas: colons\\n"
    big_prompt = b'{"model":"m","messages":[{"role":"user","content":"'
    big_prompt += text * ((cap - len(big_prompt) - 4) // len(text)) + b'"}]}'
    # Just under the value limit, the rest of the cap spent on long strings.
    near = MAX_JSON_VALUES // 2 - 10
    filler = b"y" * ((cap - 64 - near * 8) // near)
    many_keys = (
        b'{"model":"m","x":{' + b",".join(b'"%07d%s":0' % (i, filler) for i in range(near)) + b"}}"
    )
    return {
        "hostile [],[],...": _filled(cap, b"[],"),
        "hostile {},{},...": _filled(cap, b"{},"),
        "hostile 0,0,...": _filled(cap, b"0,"),
        "hostile 1.5,1.5,...": _filled(cap, b"1.5,"),
        'hostile "ab","ab",...': _filled(cap, b'"ab",'),
        'hostile "\\"",...': _filled(cap, b'"\\"",'),
        "hostile [[[[...": b"[" * cap,
        'hostile {"k":{"k":...': b'{"k":' * (cap // 5),
        "legit one 10 MiB prompt of code": big_prompt,
        f"legit {near * 2} values, long keys": many_keys,
    }


def _run(raw: bytes) -> str:
    try:
        parse_json_body(raw)
    except BadRequest as exc:
        return f"400 {exc.code}"
    return "parsed"


def measure(raw: bytes, repeat: int) -> dict[str, object]:
    """Outcome, best loop time and traced peak of parsing ``raw``."""
    best = float("inf")
    outcome = ""
    for _ in range(repeat):
        start = time.perf_counter()
        outcome = _run(raw)
        best = min(best, time.perf_counter() - start)
    tracemalloc.start()
    try:
        _run(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return {
        "outcome": outcome,
        "loop_ms": round(best * 1000, 1),
        "peak_extra_mib": round(peak / 2**20, 1),
        "peak_per_body": round(peak / len(raw), 2),
        "body_mib": round(len(raw) / 2**20, 2),
    }


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap-mib", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = {
        name: measure(raw, args.repeat) for name, raw in shapes(int(args.cap_mib * 2**20)).items()
    }
    missed = [
        name
        for name, r in results.items()
        if float(r["peak_per_body"]) > MEMORY_TARGET or float(r["loop_ms"]) > TIME_TARGET_MS  # type: ignore[arg-type]
    ]
    if args.json:
        out(json.dumps({"results": results, "missed": missed}, indent=2))
    else:
        out(f"{'body':38} {'outcome':24} {'loop ms':>8} {'peak MiB':>9} {'x body':>7}")
        for name, r in results.items():
            out(
                f"{name:38} {r['outcome']!s:24} {r['loop_ms']:>8} {r['peak_extra_mib']:>9} "
                f"{r['peak_per_body']:>7}"
            )
        out(
            f"targets: <= {MEMORY_TARGET:g}x the body, <= {TIME_TARGET_MS:g} ms; "
            f"missed: {missed or 'none'}"
        )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
