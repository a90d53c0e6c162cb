"""``ChaosOptions``: everything a chaos run depends on, and the command that replays it.

``ChaosOptions.from_args`` validates the command line (``harness.chaos.command``);
``plan_settings`` and ``stack_settings`` derive what the draws and the spawned stack
need; ``reproduce_argv(i)`` is the command that replays request ``i`` alone with the
same draws and the same stack.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass, replace

from harness.chaos.bodies import normalise_dialects
from harness.chaos.kinds import KINDS
from harness.chaos.plan import PlanSettings
from harness.chaos.stack import EMBED_ALIAS, LIVE_ALIAS, MANAGED_ALIAS, StackSettings

__all__ = ["ChaosOptions"]


@dataclass(frozen=True)
class ChaosOptions:
    """Everything a run depends on (``from_args`` builds it from the command line)."""

    target: str | None = None  # None = spawn mode
    model: str | None = None
    expect_model: str | None = None
    requests: int = 1000
    concurrency: int = 16
    seed: int = 0
    stream_ratio: float = 0.8
    only_request: int | None = None
    kinds: tuple[str, ...] = tuple(KINDS)
    fakes: int = 2
    proxies: int = 3
    managed: bool = True
    idle_timeout: float | None = None  # spawn: 1.5 s unless given; target: unknown
    header_timeout: float | None = None  # spawn: 2.5 s unless given; target: unknown
    fake_seed: int = 0
    margin: float = 5.0
    managed_margin: float = 15.0
    delay_scale: float = 1.0
    max_rss_growth_mb: float = 50.0
    fd_tolerance: int = 8
    json_path: str | None = None
    progress_every: int = 100
    keep_dir: bool = False
    strict: bool = False  # no "pool_race" excuse for unexpected failures
    kill_restart: bool = False  # spawn: SIGKILL server_core after the run, restart it
    # The request dialects to draw from (kinds.DIALECT_NAMES order); None: every one the
    # target serves, probed at the start of the run (harness.chaos.served).
    dialects: tuple[str, ...] | None = None

    @property
    def spawn(self) -> bool:
        """Spawn mode: the runner starts its own stack (no ``--target``)."""
        return self.target is None

    @property
    def spawn_idle_timeout(self) -> float:
        """The upstream idle timeout the spawned server gets."""
        return self.idle_timeout if self.idle_timeout is not None else 1.5

    @property
    def spawn_header_timeout(self) -> float:
        """The upstream header timeout the spawned server gets."""
        return self.header_timeout if self.header_timeout is not None else 2.5

    def stack_settings(self) -> StackSettings:
        """How spawn mode builds its stack for these options."""
        return StackSettings(
            fakes=self.fakes,
            lanes=self.proxies,
            managed=self.managed,
            parallel=max(16, 2 * self.concurrency),
            fake_seed=self.fake_seed,
            proxy_seed=self.seed,
            idle_timeout=self.spawn_idle_timeout,
            header_timeout=self.spawn_header_timeout,
            keep_dir=self.keep_dir,
            live="live_fault" in self.kinds,
            embed="embeddings" in self.kinds,
            startup="startup" in self.kinds,
        )

    def plan_settings(self) -> PlanSettings:
        """What the run offers the draws (spawn: the stack's aliases and lanes)."""
        common = PlanSettings(
            kinds=self.kinds,
            dialects=self.dialects or PlanSettings.dialects,
            stream_ratio=self.stream_ratio,
            fake_seed=self.fake_seed,
            delay_scale=self.delay_scale,
            margin=self.margin,
            managed_margin=self.managed_margin,
        )
        if self.spawn:
            stack = self.stack_settings()
            return replace(
                common,
                aliases=stack.direct_aliases,
                live_alias=LIVE_ALIAS if stack.live else None,
                embed_alias=EMBED_ALIAS if stack.embed else None,
                startup_aliases=stack.startup_aliases,
                freeze=self.managed,
                managed_alias=MANAGED_ALIAS if self.managed else None,
                lanes=self.proxies,
                idle_timeout=self.spawn_idle_timeout,
                header_timeout=self.spawn_header_timeout,
            )
        assert self.model is not None
        return replace(
            common,
            aliases=(self.model,),
            managed_alias=None,
            lanes=0,
            idle_timeout=self.idle_timeout,
            header_timeout=self.header_timeout,
        )

    def reproduce_argv(self, index: int) -> list[str]:
        """The command that replays request ``index`` alone (same draws, same stack)."""
        argv = [sys.executable, "-m", "harness.chaos"]
        argv += self._spawn_argv() if self.spawn else self._target_argv()
        argv += [
            "--seed",
            str(self.seed),
            "--stream-ratio",
            _num(self.stream_ratio),
            "--kinds",
            ",".join(self.plan_settings().enabled_kinds()),
            "--fake-seed",
            str(self.fake_seed),
            "--margin",
            _num(self.margin),
            "--managed-margin",
            _num(self.managed_margin),
            "--delay-scale",
            _num(self.delay_scale),
            "--only-request",
            str(index),
        ]
        if self.dialects is not None:
            argv += ["--dialects", ",".join(self.dialects)]
        if self.strict:
            argv.append("--strict")
        return argv

    def _spawn_argv(self) -> list[str]:
        argv = ["--spawn", "--fakes", str(self.fakes), "--proxies", str(self.proxies)]
        if not self.managed:
            argv.append("--no-managed")
        argv += ["--idle-timeout", _num(self.spawn_idle_timeout)]
        argv += ["--header-timeout", _num(self.spawn_header_timeout)]
        return argv

    def _target_argv(self) -> list[str]:
        assert self.target is not None and self.model is not None
        argv = ["--target", self.target, "--model", self.model]
        if self.expect_model:
            argv += ["--expect-model", self.expect_model]
        if self.idle_timeout is not None:
            argv += ["--idle-timeout", _num(self.idle_timeout)]
        if self.header_timeout is not None:
            argv += ["--header-timeout", _num(self.header_timeout)]
        return argv

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ChaosOptions:
        """Options from ``harness chaos`` arguments; ValueError says what is wrong."""
        _check_args(args)
        kinds = _kind_list(args.kinds) if args.kinds else list(KINDS)
        excluded = set(_kind_list(args.exclude_kinds)) if args.exclude_kinds else set()
        kinds = [k for k in kinds if k not in excluded]
        seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
        _check_numbers(args)
        options = cls(
            target=args.target.rstrip("/") if args.target else None,
            model=args.model,
            expect_model=args.expect_model,
            requests=args.requests,
            concurrency=args.concurrency,
            seed=seed,
            stream_ratio=args.stream_ratio,
            only_request=args.only_request,
            kinds=tuple(kinds),
            fakes=args.fakes,
            proxies=args.proxies,
            managed=not args.no_managed,
            idle_timeout=args.idle_timeout,
            header_timeout=args.header_timeout,
            fake_seed=args.fake_seed,
            margin=args.margin,
            managed_margin=args.managed_margin,
            delay_scale=args.delay_scale,
            max_rss_growth_mb=args.max_rss_growth_mb,
            fd_tolerance=args.fd_tolerance,
            json_path=args.json,
            progress_every=args.progress,
            keep_dir=args.keep_dir,
            strict=args.strict,
            kill_restart=args.kill_restart,
            dialects=normalise_dialects(_names(args.dialects)) if args.dialects else None,
        )
        if not options.plan_settings().enabled_kinds():
            raise ValueError("no fault kind left to run (see --list-kinds)")
        return options


def _check_args(args: argparse.Namespace) -> None:
    if args.target is None and args.model is not None:
        raise ValueError("--model goes with --target (spawn mode names its own aliases)")
    if args.target is not None and not args.model:
        raise ValueError("--target needs --model (the alias to ask for)")


def _check_numbers(args: argparse.Namespace) -> None:
    if not 0.0 <= args.stream_ratio <= 1.0:
        raise ValueError("--stream-ratio must be within 0..1")
    if args.requests < 1 or args.concurrency < 1:
        raise ValueError("--requests and --concurrency must be >= 1")
    if args.fakes < 1 or args.fakes > 26 or args.proxies < 0:
        raise ValueError("--fakes must be 1..26 and --proxies >= 0")


def _num(x: float) -> str:
    return f"{x:g}"


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _kind_list(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown fault kind(s) {', '.join(unknown)} (see --list-kinds)")
    return kinds
