"""The dialect draw and the body of each dialect: seeds reproduce, ``--dialects`` restricts,
and each body asks the fake for the text the plan expects."""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import replace

import pytest

from harness import chaos
from harness.chaos.bodies import (
    MESSAGES_DEFAULT_MAX_TOKENS,
    build_body,
    draw_endpoint,
    generation_body,
    normalise_dialects,
)
from harness.chaos.draw import generate_plans
from harness.chaos.kinds import (
    CHAT,
    COMPLETIONS,
    DIALECT_ENDPOINTS,
    DIALECT_NAMES,
    MESSAGES,
    NATIVE,
    OLLAMA_CHAT,
    OLLAMA_GENERATE,
    RESPONSES,
)
from harness.chaos.options import ChaosOptions
from harness.chaos.plan import first_token_event, stream_events
from harness.fake_llama import plan_generation
from tests.harness.chaos.support import FIRST_SPAWN_SETTINGS, SPAWN_SETTINGS

ALL = replace(SPAWN_SETTINGS, dialects=DIALECT_NAMES)


def test_bodies_spell_the_limit_the_way_each_api_does() -> None:
    assert build_body(CHAT, "m", "hi", 5, True, include_usage=True) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": 5,
        "stream_options": {"include_usage": True},
    }
    assert build_body(COMPLETIONS, "m", "hi", None, False) == {
        "model": "m",
        "prompt": "hi",
        "stream": False,
    }
    assert build_body(RESPONSES, "m", "hi", 5, True) == {
        "model": "m",
        "input": "hi",
        "stream": True,
        "max_output_tokens": 5,
    }
    assert build_body(NATIVE, "m", "hi", 5, True) == {
        "model": "m",
        "prompt": "hi",
        "stream": True,
        "n_predict": 5,
    }
    # Anthropic requires max_tokens: a request that drew none still sends one.
    assert build_body(MESSAGES, "m", "hi", None, True)["max_tokens"] == MESSAGES_DEFAULT_MAX_TOKENS
    assert build_body(MESSAGES, "m", "hi", 3, True)["messages"] == [
        {"role": "user", "content": "hi"}
    ]


def test_generation_body_is_the_chat_request_llama_server_makes_of_responses() -> None:
    body = build_body(RESPONSES, "m", "hi there", 4, True)
    chat = build_body(CHAT, "m", "hi there", 4, True)
    assert generation_body(RESPONSES, body) == chat
    assert plan_generation(generation_body(RESPONSES, body)) == plan_generation(chat)
    assert generation_body(MESSAGES, build_body(MESSAGES, "m", "x", 4, True))["max_tokens"] == 4


def test_draw_endpoint_keeps_the_first_mix_split_and_spreads_the_rest() -> None:
    first = ("chat", "completions")
    assert draw_endpoint(first, 0.84, "clean") == CHAT
    assert draw_endpoint(first, 0.86, "clean") == COMPLETIONS
    assert draw_endpoint(("native",), 0.99, "clean") == NATIVE
    count = len(DIALECT_NAMES)
    spread = [draw_endpoint(DIALECT_NAMES, (i + 0.5) / count, "clean") for i in range(count)]
    assert spread == [DIALECT_ENDPOINTS[n] for n in DIALECT_NAMES]
    assert draw_endpoint(("responses",), 0.3, "freeze") == CHAT  # a frozen child needs chat


def test_normalise_dialects_orders_and_rejects() -> None:
    assert normalise_dialects(["native", "chat", "native"]) == ("chat", "native")
    with pytest.raises(ValueError, match="unknown dialect"):
        normalise_dialects(["chat", "klingon"])
    with pytest.raises(ValueError, match="no dialect"):
        normalise_dialects([])


def test_every_dialect_is_drawn_and_seeds_reproduce() -> None:
    plans = generate_plans(ALL, seed=11, n=400)
    assert plans == generate_plans(ALL, seed=11, n=400)
    counts = Counter(p.dialect for p in plans)
    assert set(counts) == {*DIALECT_NAMES, "embeddings"}
    assert all(counts[d] > 40 for d in DIALECT_NAMES), counts
    # Request i is the same whatever --requests is (--only-request replays it).
    assert generate_plans(ALL, seed=11, n=120)[-1] == plans[119]


def test_a_restricted_set_draws_only_its_dialects() -> None:
    only = replace(ALL, dialects=("responses", "messages"))
    plans = generate_plans(only, seed=4, n=200)
    # freeze is always chat and embeddings has its own endpoint.
    assert {p.dialect for p in plans if p.kind not in ("freeze", "embeddings")} == {
        "responses",
        "messages",
    }


def test_the_first_mix_draws_what_it_drew_before_the_dialects() -> None:
    # The default dialects are the first mix's two, in any order on the command line.
    assert FIRST_SPAWN_SETTINGS.dialects == ("chat", "completions")
    listed = replace(FIRST_SPAWN_SETTINGS, dialects=normalise_dialects(["completions", "chat"]))
    assert generate_plans(listed, 5, 80) == generate_plans(FIRST_SPAWN_SETTINGS, 5, 80)
    assert {p.dialect for p in generate_plans(listed, 5, 80)} == {"chat", "completions"}


@pytest.mark.parametrize("dialect", DIALECT_NAMES)
def test_a_plan_expects_the_text_and_events_of_its_dialect(dialect: str) -> None:
    settings = replace(ALL, dialects=(dialect,), kinds=("clean",))
    rng_plans = generate_plans(settings, seed=2, n=30)
    for plan in rng_plans:
        assert plan.endpoint == DIALECT_ENDPOINTS[dialect] and plan.dialect == dialect
        gen = plan_generation(generation_body(plan.endpoint, plan.body), settings.fake_seed)
        assert plan.tokens == tuple(gen.tokens) and plan.finish_reason == gen.finish_reason
        if plan.stream:
            usage = "stream_options" in plan.body
            assert plan.n_events == stream_events(plan.endpoint, len(plan.tokens), usage)
            assert plan.n_events > first_token_event(plan.endpoint)


def test_dialects_option_round_trips_through_the_reproduce_command() -> None:
    parser = argparse.ArgumentParser()
    chaos.add_arguments(parser)
    base = ["--target", "http://h:1", "--model", "m", "--seed", "4"]
    opts = ChaosOptions.from_args(parser.parse_args([*base, "--dialects", "native, chat"]))
    assert opts.dialects == ("chat", "native")
    argv = opts.reproduce_argv(9)
    assert argv[argv.index("--dialects") + 1] == "chat,native"
    again = ChaosOptions.from_args(parser.parse_args(argv[3:]))
    # (--kinds names the enabled kinds only: compare the rest.)
    assert replace(again.plan_settings(), kinds=()) == replace(opts.plan_settings(), kinds=())
    assert generate_plans(again.plan_settings(), 4, 10) == generate_plans(
        opts.plan_settings(), 4, 10
    )
    # Not given: probed at the start of the run, so not in the command until then.
    probed = ChaosOptions.from_args(parser.parse_args(base))
    assert probed.dialects is None and "--dialects" not in probed.reproduce_argv(9)
    with pytest.raises(ValueError, match="unknown dialect"):
        ChaosOptions.from_args(parser.parse_args([*base, "--dialects", "chat,soap"]))


def test_ollama_bodies_and_the_chat_request_server_core_makes_of_them() -> None:
    chat = build_body(OLLAMA_CHAT, "a", "hi there", 7, stream=True)
    assert chat == {
        "model": "a",
        "messages": [{"role": "user", "content": "hi there"}],
        "stream": True,
        "options": {"num_predict": 7},
    }
    generate = build_body(OLLAMA_GENERATE, "a", "hi there", None, stream=False)
    assert generate == {"model": "a", "prompt": "hi there", "stream": False}
    # Both generate from one user turn; num_predict is max_tokens. A generate prompt
    # gives the text a chat with that one message gives.
    as_chat = generation_body(OLLAMA_CHAT, chat)
    assert as_chat["messages"] == chat["messages"] and as_chat["max_tokens"] == 7
    same = build_body(OLLAMA_GENERATE, "a", "hi there", 7, stream=True)
    assert plan_generation(generation_body(OLLAMA_GENERATE, same)) == plan_generation(as_chat)
    # The upstream chat stream carries the usage chunk server_core asks for.
    assert stream_events(OLLAMA_CHAT, 5, False) == stream_events(CHAT, 5, True) == 9
    assert first_token_event(OLLAMA_GENERATE) == first_token_event(CHAT)
