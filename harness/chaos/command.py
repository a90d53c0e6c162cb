"""``harness chaos`` on the command line: its options, ``run(args)`` and ``main(argv)``.

``add_arguments`` is shared by ``python -m harness.chaos`` and the ``harness chaos``
subcommand (``harness.cli``). ``run`` turns the arguments into ``ChaosOptions``, runs
``run_chaos`` on the global reactor, prints the report and writes ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from harness.chaos.judge import VIOLATION_CODES
from harness.chaos.kinds import KINDS
from harness.chaos.options import ChaosOptions
from harness.chaos.runner import run_chaos

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``harness chaos`` options."""
    _mode_arguments(parser)
    _load_arguments(parser)
    _fault_arguments(parser)
    _check_arguments(parser)


def _mode_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_argument_group("what to test")
    mode.add_argument(
        "--spawn",
        action="store_true",
        help="start fakes, netfault lanes and twistd server-core (the default without --target)",
    )
    mode.add_argument("--target", metavar="URL", help="a running server in front of a fake")
    mode.add_argument("--model", metavar="M", help="with --target: the model alias to ask for")
    mode.add_argument(
        "--expect-model",
        metavar="X",
        help="with --target: the model id responses must carry (default: --model)",
    )


def _load_arguments(parser: argparse.ArgumentParser) -> None:
    load = parser.add_argument_group("load")
    load.add_argument("--requests", "-n", type=int, default=1000, help="requests (default 1000)")
    load.add_argument("--concurrency", "-c", type=int, default=16, help="in flight (default 16)")
    load.add_argument(
        "--seed", type=int, default=None, help="seed of every choice (default random)"
    )
    load.add_argument(
        "--stream-ratio", type=float, default=0.8, help="share of streaming requests (0.8)"
    )
    load.add_argument(
        "--only-request", type=int, metavar="I", help="run only request I of the seed (reproduce)"
    )


def _fault_arguments(parser: argparse.ArgumentParser) -> None:
    faults = parser.add_argument_group("faults")
    faults.add_argument("--kinds", metavar="K,K", help="only these fault kinds (see --list-kinds)")
    faults.add_argument("--exclude-kinds", metavar="K,K", help="leave these fault kinds out")
    faults.add_argument("--list-kinds", action="store_true", help="print the fault kinds and exit")
    faults.add_argument(
        "--dialects",
        metavar="D,D",
        help="request dialects to draw from: chat, completions, responses, messages, native, "
        "ollama_chat, ollama_generate (default: every one the target serves, probed)",
    )
    faults.add_argument("--fakes", type=int, default=2, help="spawn: fake upstreams (2)")
    faults.add_argument(
        "--proxies", type=int, default=3, help="spawn: netfault lanes (3; 0 = none)"
    )
    faults.add_argument(
        "--no-managed", action="store_true", help="spawn: no managed alias (no crash faults)"
    )
    faults.add_argument(
        "--idle-timeout",
        type=float,
        metavar="S",
        help="server's upstream idle timeout (spawn: set to this, default 1.5; target: "
        "enables stall faults)",
    )
    faults.add_argument(
        "--header-timeout",
        type=float,
        metavar="S",
        help="server's upstream header timeout (spawn: default 2.5; target: enables hang)",
    )
    faults.add_argument(
        "--fake-seed", type=int, default=0, help="the fakes' --seed (the text depends on it)"
    )
    faults.add_argument(
        "--delay-scale", type=float, default=1.0, help="multiply every injected delay (1.0)"
    )


def _check_arguments(parser: argparse.ArgumentParser) -> None:
    checks = parser.add_argument_group("checks and output")
    checks.add_argument(
        "--margin", type=float, default=5.0, help="deadline slack per request in seconds (5)"
    )
    checks.add_argument(
        "--managed-margin",
        type=float,
        default=15.0,
        help="extra slack for the managed alias, which restarts after crashes (15)",
    )
    checks.add_argument(
        "--max-rss-growth-mb", type=float, default=50.0, help="spawn: RSS growth bound (50)"
    )
    checks.add_argument(
        "--fd-tolerance", type=int, default=8, help="spawn: extra fds allowed after the run (8)"
    )
    checks.add_argument("--json", metavar="FILE", help="write the JSON report here")
    checks.add_argument(
        "--progress", type=int, default=100, metavar="N", help="progress every N requests (0 off)"
    )
    checks.add_argument(
        "--kill-restart",
        action="store_true",
        help="spawn: after the run SIGKILL server_core, check that no child it managed "
        "is left and its port is free, restart it on that port and check it serves",
    )
    checks.add_argument("--keep-dir", action="store_true", help="spawn: keep the temporary dir")
    checks.add_argument(
        "--strict",
        action="store_true",
        help="no pool_race excuse: an HTTP error of a fault-free request next to a "
        "request that closed or aborted its upstream connection is a violation",
    )


def _list_kinds() -> str:
    lines = [f"{'kind':<16}{'weight':>7}  {'needs':<15} what"]
    for kind, info in KINDS.items():
        lines.append(f"{kind:<16}{info.weight:>7g}  {info.needs or '-':<15} {info.doc}")
    lines.append("")
    lines.append("violation codes:")
    lines += [f"  {code:<22} {text}" for code, text in VIOLATION_CODES.items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``harness chaos`` with parsed ``args`` on the global reactor; exit status:
    0 no violation, 1 violations, 2 bad arguments or the stack did not start, 130
    interrupted (SIGINT/SIGTERM; the stack is stopped first)."""
    if args.list_kinds:
        print(_list_kinds())
        return 0
    if args.spawn and args.target:
        print("harness chaos: --spawn and --target exclude each other", file=sys.stderr)
        return 2
    try:
        options = ChaosOptions.from_args(args)
    except ValueError as exc:
        print(f"harness chaos: {exc}", file=sys.stderr)
        return 2
    return _run_on_global_reactor(options)


def _run_on_global_reactor(options: ChaosOptions) -> int:
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    code: list[int] = []

    async def go() -> None:
        report = await run_chaos(options, reactor)
        print(report.format_text(), flush=True)
        if options.json_path:
            with open(options.json_path, "w", encoding="utf-8") as fh:
                json.dump(report.to_json(), fh, indent=2, ensure_ascii=False)
                fh.write("\n")
        code.append(report.exit_code)

    def finished(result: object) -> None:
        if isinstance(result, Failure):
            print(f"harness chaos: {result.getTraceback()}", file=sys.stderr)
            code.append(2)
        if reactor.running:
            reactor.stop()

    def start() -> None:
        defer.ensureDeferred(go()).addBoth(finished)

    reactor.callWhenRunning(start)
    reactor.run()
    return code[0] if code else 130  # the reactor stopped first: interrupted


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.chaos``: parse ``argv`` and run; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="harness chaos",
        description="Load + seeded random faults + invariant checks against server_core.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
