"""The ``harness`` console script: one argparse subcommand per tool.

Subcommands live in the ``SUBCOMMANDS`` registry so other modules can add theirs
without touching ``main``::

    def add_parser(subparsers) -> argparse.ArgumentParser:
        p = subparsers.add_parser("chaos", help="...", description="...")
        p.add_argument(...)
        p.set_defaults(run=run_chaos)      # run_chaos(args: argparse.Namespace) -> int
        return p

    SUBCOMMANDS["chaos"] = add_parser      # or register_subcommand("chaos", add_parser)

``main`` calls every registered function in insertion order, parses ``argv`` and
returns ``args.run(args)``. Exit codes: what ``run`` returns; 2 for usage errors.
``run_reactor`` runs a coroutine on the global reactor for subcommands built on Twisted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.python.failure import Failure

__all__ = [
    "EXIT_FAIL",
    "EXIT_OK",
    "EXIT_USAGE",
    "SUBCOMMANDS",
    "AddParser",
    "main",
    "register_subcommand",
    "run_reactor",
]

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# argparse's subparsers action is private; Any keeps the registry signature honest.
AddParser = Callable[[Any], argparse.ArgumentParser]

SUBCOMMANDS: dict[str, AddParser] = {}


def register_subcommand(name: str, add_parser: AddParser) -> None:
    """Add (or replace) the subcommand ``name``; see the module docstring."""
    SUBCOMMANDS[name] = add_parser


def run_reactor(main: Callable[[Any], Coroutine[Any, Any, int]]) -> int:
    """Run ``main(reactor)`` on the global reactor until it finishes; return its int.

    Unlike ``twisted.internet.task.react`` this returns instead of calling
    ``sys.exit``, so ``harness.cli.main`` stays callable from Python. An exception
    from ``main`` propagates; Ctrl-C (the reactor stopping first) gives 130.
    """
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    outcome: list[Any] = []

    def finished(result: Any) -> None:
        outcome.append(result)
        if reactor.running:
            reactor.stop()

    def start() -> None:
        ensureDeferred(main(reactor)).addBoth(finished)

    reactor.callWhenRunning(start)
    reactor.run()
    if not outcome:
        return EXIT_INTERRUPTED
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return int(result)


# -- conformance ---------------------------------------------------------------------------


def _conformance_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "conformance",
        help="check an OpenAI-compatible server's chat/completions protocol and streaming",
        description=(
            "Run the named conformance checks against an OpenAI-compatible server. "
            "Prints a table on stdout and progress on stderr. Exit 0: no check failed; "
            "1: some check failed; 2: bad usage or the target did not answer. "
            "With --reference: exit 0 when every difference is allowed, 1 when one is not."
        ),
    )
    p.add_argument("--target", help="base URL, e.g. http://127.0.0.1:1135 (a /v1 suffix is ok)")
    p.add_argument("--model", help="model id to test (must be listed by /v1/models)")
    p.add_argument("--api-key", help="API key (Bearer); also enables the auth.* checks")
    p.add_argument("--json", metavar="FILE", help="also write the JSON report to FILE")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    p.add_argument(
        "--only",
        metavar="NAME,...",
        help="run only these checks (exact names or group prefixes like chat.stream)",
    )
    p.add_argument(
        "--lenient",
        action="store_true",
        help="accept any 4xx (not only 400) for invalid requests, and non-JSON 404/405 bodies",
    )
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    d = p.add_argument_group(
        "differential mode",
        "run every check against --target and --reference and report the checks whose "
        "results differ; exit 1 when a difference is not allowed",
    )
    d.add_argument("--reference", metavar="URL", help="the server to compare --target with")
    d.add_argument("--reference-model", metavar="M", help="model id there (default: --model)")
    d.add_argument("--reference-api-key", metavar="K", help="API key there (default: none)")
    d.add_argument(
        "--allow-diff",
        metavar="CHECK",
        action="append",
        default=[],
        help="a documented difference: this check (or group) may differ; repeatable",
    )
    d.add_argument(
        "--allow-diff-file",
        metavar="FILE",
        help="allowed differences, one check name per line (# comments)",
    )
    p.set_defaults(run=_run_conformance)
    return p


def _run_conformance(args: argparse.Namespace) -> int:
    from harness.conformance import CHECKS, TargetUnreachable, run_conformance, select_checks

    if args.list:
        width = max(len(c.name) for c in CHECKS)
        for c in CHECKS:
            print(f"{c.name:<{width}}  {c.description}")
        return EXIT_OK
    missing = [opt for opt in ("target", "model") if not getattr(args, opt)]
    if missing:
        print(f"harness conformance: missing --{' --'.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    if args.timeout <= 0:
        print("harness conformance: --timeout must be > 0", file=sys.stderr)
        return EXIT_USAGE
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        print(f"harness conformance: --json: no such directory for {args.json}", file=sys.stderr)
        return EXIT_USAGE
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    try:
        select_checks(only)
    except ValueError as exc:
        print(f"harness conformance: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def progress(done: int, total: int, res: Any) -> None:
        if not args.quiet:
            print(f"[{done:>2}/{total}] {res.result:<4} {res.name}", file=sys.stderr, flush=True)

    if args.reference:
        return _run_differential(args, only, progress)

    async def go(reactor: Any) -> int:
        try:
            report = await run_conformance(
                args.target,
                args.model,
                args.api_key,
                reactor,
                timeout=args.timeout,
                only=only,
                lenient=args.lenient,
                progress=progress,
            )
        except TargetUnreachable as exc:
            print(f"harness conformance: target unreachable: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(report.format_table())
        if args.json:
            try:
                with open(args.json, "w", encoding="utf-8") as f:
                    f.write(report.to_json() + "\n")
            except OSError as exc:
                print(f"harness conformance: --json: {exc}", file=sys.stderr)
                return EXIT_USAGE
        return EXIT_OK if report.ok else EXIT_FAIL

    return run_reactor(go)


def _allowed_differences(args: argparse.Namespace) -> list[str] | None:
    """``--allow-diff`` names plus ``--allow-diff-file``'s, checked; None after a usage error."""
    from harness.conformance import read_allow_file
    from harness.conformance.differential import expand_allow

    allow = [n.strip() for arg in args.allow_diff for n in arg.split(",") if n.strip()]
    try:
        if args.allow_diff_file:
            allow += read_allow_file(args.allow_diff_file)
        expand_allow(allow)
    except (OSError, ValueError) as exc:
        print(f"harness conformance: --allow-diff: {exc}", file=sys.stderr)
        return None
    return allow


def _run_differential(args: argparse.Namespace, only: list[str] | None, progress: Any) -> int:
    """``--reference``: both runs, the differences on stdout; exit 1 on an unallowed one."""
    from harness.conformance import TargetUnreachable, run_differential

    allow = _allowed_differences(args)
    if allow is None:
        return EXIT_USAGE

    async def go(reactor: Any) -> int:
        try:
            diff = await run_differential(
                args.target,
                args.reference,
                args.model,
                reference_model=args.reference_model,
                api_key=args.api_key,
                reference_api_key=args.reference_api_key,
                allow=allow,
                reactor=reactor,
                timeout=args.timeout,
                only=only,
                lenient=args.lenient,
                progress=progress,
            )
        except TargetUnreachable as exc:
            print(f"harness conformance: target unreachable: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(diff.format_table())
        if args.json:
            try:
                with open(args.json, "w", encoding="utf-8") as f:
                    f.write(diff.to_json() + "\n")
            except OSError as exc:
                print(f"harness conformance: --json: {exc}", file=sys.stderr)
                return EXIT_USAGE
        return EXIT_OK if diff.ok else EXIT_FAIL

    return run_reactor(go)


register_subcommand("conformance", _conformance_parser)


def _chaos_parser(subparsers: Any) -> argparse.ArgumentParser:
    # Imported lazily: the chaos runner pulls in the whole stack machinery.
    from harness import chaos

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "chaos", help="load + seeded random faults + invariant checks"
    )
    chaos.add_arguments(parser)
    parser.set_defaults(run=chaos.run)
    return parser


register_subcommand("chaos", _chaos_parser)


# -- entry point ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness", description="Fault-injection and conformance tools for LLM servers."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_parser in SUBCOMMANDS.values():
        add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    run = getattr(args, "run", None)
    if run is None:
        parser.print_usage(sys.stderr)
        print("harness: choose a command", file=sys.stderr)
        return EXIT_USAGE
    return int(run(args))


if __name__ == "__main__":
    # Under ``python -m harness.cli`` this file is ``__main__``; use the registry of the
    # importable ``harness.cli`` so subcommands other modules registered there count.
    from harness.cli import main as _main

    sys.exit(_main())
