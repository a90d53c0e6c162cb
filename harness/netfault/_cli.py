"""The ``netfault`` console script: one ``FaultProxy`` (and its control API) from the shell.

stdout carries exactly two parseable lines (``listening on HOST:PORT`` and
``control on http://HOST:PORT``); problems go to stderr. Exit 2 on bad arguments,
1 if a port cannot be bound, 0 after SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.python.failure import Failure

from harness.netfault._errors import InvalidToxicError
from harness.netfault._proxy import FaultProxy
from harness.netfault._toxic import Toxic, parse_toxic_spec


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> ``(host, port)``; ValueError if bad."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port must be an integer in {text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535 in {text!r}")
    if not host:
        raise ValueError(f"empty host in {text!r}")
    return host, port


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _address_arg(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _toxic_arg(text: str) -> Toxic:
    try:
        return parse_toxic_spec(text)
    except InvalidToxicError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netfault",
        description="TCP fault proxy with Toxiproxy toxics (latency, bandwidth, slicer, ...).",
    )
    parser.add_argument(
        "--listen",
        type=_address_arg,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="address to accept clients on (default 127.0.0.1:0 = free port)",
    )
    parser.add_argument(
        "--upstream",
        type=_address_arg,
        required=True,
        metavar="HOST:PORT",
        help="server to forward to",
    )
    parser.add_argument(
        "--control",
        type=_address_arg,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="address of the JSON control API (default 127.0.0.1:0)",
    )
    parser.add_argument("--no-control", action="store_true", help="do not serve the control API")
    parser.add_argument(
        "--toxic",
        type=_toxic_arg,
        action="append",
        default=[],
        metavar="TYPE[:STREAM[:K=V,...]]",
        help="add a toxic at start, e.g. 'latency:downstream:latency=100,jitter=10' "
        "(keys name= and toxicity= are accepted too); repeatable",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for toxicity/jitter/slicing")
    return parser


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _build_parser()
    args = parser.parse_args(argv)
    names = [t.name for t in args.toxic]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        parser.error(f"duplicate toxic name(s): {', '.join(duplicates)} (use name=...)")
    return args


def _log_errors_to_stderr() -> None:
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    # Only problems go to stderr; stdout stays the two parseable lines.
    errors_only = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [errors_only])],
        redirectStandardIO=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``netfault``. Exit 2 on bad arguments, 1 if binding fails."""
    args = _parse_args(argv)
    from twisted.internet import reactor

    _log_errors_to_stderr()
    listen_host, listen_port = args.listen
    proxy = FaultProxy(
        listen_port=listen_port,
        upstream=args.upstream,
        seed=args.seed,
        reactor=reactor,
        listen_host=listen_host,
    )
    for toxic in args.toxic:
        proxy.install(toxic)
    exit_code = [0]

    def started() -> None:
        try:
            _start(proxy, args)
        except CannotListenError as e:
            print(f"netfault: cannot listen: {e}", file=sys.stderr, flush=True)
            exit_code[0] = 1
            reactor.stop()

    reactor.callWhenRunning(started)
    reactor.addSystemEventTrigger("before", "shutdown", proxy.stop)
    reactor.run()  # SIGINT/SIGTERM stop it
    return exit_code[0]


def _start(proxy: FaultProxy, args: argparse.Namespace) -> None:
    """Bind the proxy (and the control API) and print where; CannotListenError if taken."""
    proxy_port = _bind(proxy.start())
    print(f"listening on {_format_address(proxy.listen_host, proxy_port)}", flush=True)
    if not args.no_control:
        control_host, control_port = args.control
        bound = _bind(proxy.start_control(control_port, control_host))
        print(f"control on http://{_format_address(control_host, bound)}", flush=True)


def _bind(d: Deferred[int]) -> int:
    """The result of an already-fired Deferred (``start``/``start_control`` are sync)."""
    box: list[int] = []
    failures: list[Failure] = []
    d.addCallbacks(box.append, failures.append)
    if failures:
        failures[0].raiseException()
    return box[0]
