"""Flag merging: layers global < variant < alias, read the way llama-server reads them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server_core.flags import (
    REPEATABLE_KEYS,
    Flag,
    FlagError,
    flag_key,
    has_flag,
    merge_flags,
    parse_flags,
)

# -- examples ---------------------------------------------------------------------------


def test_later_layer_wins_and_keeps_first_position() -> None:
    merged = merge_flags(["-c", "4096", "--jinja", "-t", "4"], ["--ctx-size", "8192"])
    assert merged == ["--ctx-size", "8192", "--jinja", "-t", "4"]


def test_three_layers() -> None:
    merged = merge_flags(
        ["-c", "1024", "-ngl", "0"], ["-ngl", "99", "-np", "2"], ["--n-gpu-layers", "10"]
    )
    assert merged == ["-c", "1024", "--n-gpu-layers", "10", "-np", "2"]


@pytest.mark.parametrize(
    ("short", "long"),
    [
        ("-c", "--ctx-size"),
        ("-ngl", "--n-gpu-layers"),
        ("-ngl", "--gpu-layers"),
        ("-np", "--parallel"),
        ("-t", "--threads"),
        ("-b", "--batch-size"),
        ("-ub", "--ubatch-size"),
        ("-fa", "--flash-attn"),
        ("-ctk", "--cache-type-k"),
        ("-ot", "--override-tensor"),
        ("-n", "--n-predict"),
        ("--predict", "--n-predict"),
        ("--ctx_size", "--ctx-size"),
        ("--no-mmap", "--mmap"),
        ("-nkvo", "--kv-offload"),
        ("--no-jinja", "--jinja"),
        ("--embeddings", "--embedding"),
    ],
)
def test_spellings_of_one_flag(short: str, long: str) -> None:
    assert flag_key(short) == flag_key(long)


def test_distinct_flags_stay_distinct() -> None:
    assert flag_key("-c") != flag_key("-C")
    assert flag_key("-c") != flag_key("-cd")
    assert flag_key("--threads") != flag_key("--threads-batch")


def test_negative_numbers_are_values() -> None:
    assert merge_flags(["-ngl", "-1", "--temp", "-0.5", "--seed", "-1"]) == [
        "-ngl",
        "-1",
        "--temp",
        "-0.5",
        "--seed",
        "-1",
    ]
    # Also for flags llama-server has but this table does not know.
    assert parse_flags(["--future-knob", "-3", "--other"]) == [
        Flag("--future-knob", "--future-knob", ("-3",)),
        Flag("--other", "--other", ()),
    ]


def test_value_flag_takes_next_token_even_if_dashed() -> None:
    # llama.cpp consumes the next argv entry for a value flag unconditionally.
    assert parse_flags(["-r", "--stop--"]) == [Flag("--reverse-prompt", "-r", ("--stop--",))]


def test_equals_form_is_split() -> None:
    assert merge_flags(["--ctx-size=2048", "--jinja"], ["-c", "512"]) == [
        "-c",
        "512",
        "--jinja",
    ]
    assert merge_flags(["--unknown-thing=x"]) == ["--unknown-thing", "x"]


def test_booleans_without_value() -> None:
    merged = merge_flags(["--jinja", "--metrics", "-c", "10", "--mlock"], ["--no-jinja"])
    assert merged == ["--no-jinja", "--metrics", "-c", "10", "--mlock"]
    # Unknown boolean followed by a flag or the end: no value.
    assert parse_flags(["--new-switch", "-c", "5", "--last"]) == [
        Flag("--new-switch", "--new-switch", ()),
        Flag("--ctx-size", "-c", ("5",)),
        Flag("--last", "--last", ()),
    ]


def test_flash_attn_old_and_new_syntax() -> None:
    assert parse_flags(["-fa", "-c", "5"])[0] == Flag("--flash-attn", "-fa", ())
    assert parse_flags(["-fa", "on"])[0] == Flag("--flash-attn", "-fa", ("on",))
    assert merge_flags(["-fa"], ["--flash-attn", "off"]) == ["--flash-attn", "off"]


def test_two_value_flags() -> None:
    flags = parse_flags(
        ["--lora-scaled", "a.gguf", "0.5", "--control-vector-layer-range", "1", "9"]
    )
    assert flags == [
        Flag("--lora", "--lora-scaled", ("a.gguf", "0.5")),
        Flag("--control-vector-layer-range", "--control-vector-layer-range", ("1", "9")),
    ]


def test_repeatable_flags_keep_all_occurrences_of_the_winning_layer() -> None:
    base = ["--lora", "a.gguf", "-c", "10", "--lora-scaled", "b.gguf", "0.3", "-ot", "x=CPU"]
    assert merge_flags(base) == [
        "--lora",
        "a.gguf",
        "--lora-scaled",
        "b.gguf",
        "0.3",
        "-c",
        "10",
        "-ot",
        "x=CPU",
    ]
    alias = ["--override-tensor", "y=CPU", "-ot", "z=CPU"]
    assert merge_flags(base, alias) == [
        "--lora",
        "a.gguf",
        "--lora-scaled",
        "b.gguf",
        "0.3",
        "-c",
        "10",
        "--override-tensor",
        "y=CPU",
        "-ot",
        "z=CPU",
    ]
    assert merge_flags(["--override-kv", "a=int:1", "--override-kv", "b=int:2"]) == [
        "--override-kv",
        "a=int:1",
        "--override-kv",
        "b=int:2",
    ]


def test_repeatable_table_lists_what_arg_cpp_accumulates() -> None:
    for name in (
        "--lora",
        "--lora-scaled",
        "--control-vector",
        "--control-vector-scaled",
        "--override-kv",
        "--override-tensor",
        "-ot",
        "--override-tensor-draft",
        "-r",
        "--logit-bias",
        "--dry-sequence-breaker",
        "--api-key",
        "--spec-replace",
    ):
        assert flag_key(name) in REPEATABLE_KEYS, name
    assert flag_key("-c") not in REPEATABLE_KEYS


def test_empty_layers() -> None:
    assert merge_flags() == []
    assert merge_flags([], []) == []
    assert merge_flags([], ["-c", "1"], []) == ["-c", "1"]


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["stray"], "'stray' is not a flag"),
        (["-c", "1", "2"], "'2' is not a flag"),
        (["-c"], "-c needs a value"),
        (["--lora-scaled", "a.gguf"], "--lora-scaled needs 2 values"),
        (["--jinja=1"], "--jinja takes no value"),
    ],
)
def test_errors(tokens: list[str], message: str) -> None:
    with pytest.raises(FlagError, match=message):
        merge_flags(tokens)


def test_has_flag() -> None:
    managed = frozenset({"--port", "--host", "-m", "--model", "-a", "--alias"})
    assert has_flag(["-c", "1", "--port=8080"], managed)
    assert has_flag(["-m", "x.gguf"], managed)
    assert not has_flag(["-c", "1", "-r", "--port"], managed)  # the value of -r
    assert not has_flag([], managed)


# -- properties -------------------------------------------------------------------------

_VALUES = st.one_of(
    st.integers(-5, 100000).map(str),
    st.sampled_from(["0.5", "-0.25", "x=CPU", "on", "off", "a.gguf", "", "a b"]),
)
# (spellings of one flag, arity); -1 = optional / unknown.
_POOL: list[tuple[tuple[str, ...], int]] = [
    (("-c", "--ctx-size", "--ctx_size"), 1),
    (("-ngl", "--gpu-layers", "--n-gpu-layers"), 1),
    (("-np", "--parallel"), 1),
    (("-t", "--threads"), 1),
    (("--temp",), 1),
    (("--jinja", "--no-jinja"), 0),
    (("--mmap", "--no-mmap"), 0),
    (("--metrics",), 0),
    (("-fa", "--flash-attn"), -1),
    (("--lora",), 1),
    (("--lora-scaled",), 2),
    (("-ot", "--override-tensor"), 1),
    (("--override-kv",), 1),
    (("-r", "--reverse-prompt"), 1),
    (("--control-vector-layer-range",), 2),
    (("--brand-new-flag",), -1),
    (("--another-new",), -1),
]


@st.composite
def _flag_tokens(draw: st.DrawFn) -> list[str]:
    names, arity = draw(st.sampled_from(_POOL))
    name = draw(st.sampled_from(names))
    if arity == 0:
        return [name]
    if arity == -1:
        value = draw(
            st.none() | _VALUES.filter(lambda v: not v.startswith("-") or v[1:2].isdigit())
        )
        if value is None:
            return [name]
        if name.startswith("--") and draw(st.booleans()):
            return [f"{name}={value}"]
        return [name, value]
    values = [draw(_VALUES) for _ in range(arity)]
    if name.startswith("--") and draw(st.booleans()):
        return [f"{name}={values[0]}", *values[1:]]
    return [name, *values]


_LAYER = st.lists(_flag_tokens(), max_size=8).map(lambda chunks: [t for c in chunks for t in c])


def _keys_in_order(tokens: list[str]) -> list[str]:
    seen: list[str] = []
    for flag in parse_flags(tokens):
        if flag.key not in seen:
            seen.append(flag.key)
    return seen


@given(_LAYER)
def test_prop_idempotent(layer: list[str]) -> None:
    once = merge_flags(layer)
    assert merge_flags(layer, layer) == once
    assert merge_flags(once) == once
    assert merge_flags(once, once) == once


@given(st.lists(_LAYER, max_size=4))
def test_prop_deterministic_first_appearance_order(layers: list[list[str]]) -> None:
    merged = merge_flags(*layers)
    assert merged == merge_flags(*layers)
    expected_order = _keys_in_order([t for layer in layers for t in layer])
    assert _keys_in_order(merged) == expected_order


@given(st.lists(_LAYER, min_size=1, max_size=4))
def test_prop_last_layer_that_sets_a_flag_wins(layers: list[list[str]]) -> None:
    merged = parse_flags(merge_flags(*layers))
    by_key: dict[str, list[Flag]] = {}
    for flag in merged:
        by_key.setdefault(flag.key, []).append(flag)
    for key, got in by_key.items():
        last_layer = next(
            parsed
            for parsed in (parse_flags(layer) for layer in reversed(layers))
            if any(f.key == key for f in parsed)
        )
        in_layer = [f for f in last_layer if f.key == key]
        if key in REPEATABLE_KEYS:
            # every occurrence of the winning layer, in order
            assert got == in_layer
        else:
            assert got == [in_layer[-1]]


@given(_LAYER, _LAYER)
def test_prop_repeatables_of_the_last_layer_survive(first: list[str], second: list[str]) -> None:
    merged = parse_flags(merge_flags(first, second))
    for flag in parse_flags(second):
        if flag.repeatable:
            assert flag in merged
    # A layer that does not mention a repeatable flag leaves the earlier ones alone.
    second_keys = {f.key for f in parse_flags(second)}
    for flag in parse_flags(first):
        if flag.repeatable and flag.key not in second_keys:
            assert flag in merged
