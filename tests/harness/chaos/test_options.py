"""ChaosOptions: the reproduce command parses back to the same draws."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import pytest

from harness import chaos
from harness.chaos import ChaosOptions
from harness.chaos.draw import generate_plan


def test_options_reproduce_command_round_trips() -> None:
    parser = argparse.ArgumentParser()
    chaos.add_arguments(parser)
    args = parser.parse_args(
        ["--target", "http://h:1", "--model", "m", "--seed", "4", "--exclude-kinds", "clean"]
    )
    opts = ChaosOptions.from_args(args)
    argv = opts.reproduce_argv(17)
    assert argv[:3] == [sys.executable, "-m", "harness.chaos"]
    again = ChaosOptions.from_args(parser.parse_args(argv[3:]))
    assert again.only_request == 17
    assert again.plan_settings().enabled_kinds() == opts.plan_settings().enabled_kinds()
    assert replace(again.plan_settings(), kinds=()) == replace(opts.plan_settings(), kinds=())
    assert generate_plan(again.plan_settings(), again.seed, 17) == generate_plan(
        opts.plan_settings(), 4, 17
    )
    with pytest.raises(ValueError, match="unknown fault kind"):
        ChaosOptions.from_args(parser.parse_args(["--kinds", "nope"]))
