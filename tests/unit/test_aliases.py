"""Alias lookup: order of kinds, API prefixes, listing, and the request_params merge."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from zope.interface.verify import verifyObject

from server_core.aliases import (
    ApiAlias,
    DefaultAliasStore,
    LocalAlias,
    RemoteTarget,
    merge_request_params,
)
from server_core.errors import AliasNotFound
from server_core.interfaces import IAliasStore


def user(name: str, **kw: Any) -> LocalAlias:
    return LocalAlias(name=name, model_path=f"/m/{name}.gguf", source="user", request_params=kw)


def model(name: str) -> LocalAlias:
    return LocalAlias(name=name, model_path=f"/d/{name}.gguf", source="model", request_params={})


def external(name: str, url: str = "http://127.0.0.1:8080/v1") -> RemoteTarget:
    return RemoteTarget(
        name=name,
        kind="external",
        base_url=url,
        api_key=None,
        upstream_model=None,
        request_params={},
    )


def api(name: str, models: tuple[str, ...] = (), prefix: str = "", fwd: bool = False) -> ApiAlias:
    return ApiAlias(
        name=name,
        base_url=f"https://{name}.example/v1",
        api_key=f"key-{name}",
        models=models,
        prefix=prefix,
        forward_all_with_prefix=fwd,
    )


def test_verify_object() -> None:
    assert verifyObject(IAliasStore, DefaultAliasStore())


# -- lookup order -------------------------------------------------------------------


def test_lookup_order_user_model_external_api() -> None:
    kinds: dict[str, Any] = {
        "user": [user("x")],
        "model": [model("x")],
        "external": [external("x")],
        "apis": [api("cloud", models=("x",))],
    }
    order = ["user", "model", "external", "apis"]
    for i, kind in enumerate(order):
        store = DefaultAliasStore(**{k: kinds[k] for k in order[i:]})
        found = store.resolve("x")
        if kind in ("user", "model"):
            assert isinstance(found, LocalAlias)
            assert found.source == kind
        else:
            assert isinstance(found, RemoteTarget)
            assert found.kind == {"external": "external", "apis": "api"}[kind]


def test_user_alias_shadows_model_alias_everywhere() -> None:
    store = DefaultAliasStore(user=[user("x")], model=[model("x"), model("y")])
    assert [a.source for a in store.local_aliases()] == ["user", "model"]
    assert [a.name for a in store.local_aliases()] == ["x", "y"]
    assert [(m["id"], m["kind"]) for m in store.list_models()] == [("x", "user"), ("y", "model")]


def test_model_alias_matches_any_case_user_alias_is_exact() -> None:
    store = DefaultAliasStore(user=[user("Mine")], model=[model("qwen-0.5b-q4_k_m")])
    assert store.resolve("Qwen-0.5B-Q4_K_M").name == "qwen-0.5b-q4_k_m"
    assert store.resolve("Mine").name == "Mine"
    with pytest.raises(AliasNotFound):
        store.resolve("mine")


def test_unknown_model_raises_alias_not_found() -> None:
    store = DefaultAliasStore(user=[user("a")], apis=[api("o", ("m",), prefix="o/")])
    for name in ["b", "", "m", "o/", "o/n", "A"]:
        with pytest.raises(AliasNotFound) as info:
            store.resolve(name)
        assert info.value.model == name
        assert info.value.status == 404
        assert info.value.code == "model_not_found"
    assert "a" in store and "b" not in store


def test_resolve_rejects_non_string() -> None:
    with pytest.raises(AliasNotFound):
        DefaultAliasStore(user=[user("1")]).resolve(1)  # type: ignore[arg-type]


# -- API prefixes -------------------------------------------------------------------


def test_api_exact_id_needs_prefix_and_prefix_is_stripped() -> None:
    store = DefaultAliasStore(apis=[api("openai", ("gpt-4o",), prefix="openai/")])
    target = store.resolve("openai/gpt-4o")
    assert isinstance(target, RemoteTarget)
    assert (target.kind, target.name, target.upstream_model) == ("api", "openai", "gpt-4o")
    assert target.base_url == "https://openai.example/v1"
    assert target.api_key == "key-openai"
    for missing in ["gpt-4o", "openai/gpt-4o-mini", "openai/"]:
        with pytest.raises(AliasNotFound):
            store.resolve(missing)


def test_api_without_prefix_forwards_name_as_is() -> None:
    store = DefaultAliasStore(apis=[api("groq", ("llama-3.1-8b",))])
    target = store.resolve("llama-3.1-8b")
    assert isinstance(target, RemoteTarget)
    assert target.upstream_model == "llama-3.1-8b"


def test_forward_all_with_prefix() -> None:
    store = DefaultAliasStore(apis=[api("openai", ("gpt-4o",), prefix="openai/", fwd=True)])
    target = store.resolve("openai/o3/with/slashes")
    assert isinstance(target, RemoteTarget)
    assert target.upstream_model == "o3/with/slashes"
    with pytest.raises(AliasNotFound):
        store.resolve("openai/")  # nothing after the prefix
    with pytest.raises(AliasNotFound):
        store.resolve("OpenAI/gpt-4o")  # prefixes are case-sensitive


def test_exact_id_beats_prefix_and_longest_prefix_wins() -> None:
    store = DefaultAliasStore(
        apis=[
            api("broad", prefix="o/", fwd=True),
            api("narrow", prefix="o/azure/", fwd=True),
            api("listed", ("special",), prefix="o/"),
        ]
    )
    assert store.resolve("o/special").name == "listed"
    assert store.resolve("o/azure/gpt").name == "narrow"
    assert store.resolve("o/azure/gpt").upstream_model == "gpt"  # type: ignore[union-attr]
    assert store.resolve("o/gpt").name == "broad"


def test_local_names_beat_api_prefix() -> None:
    store = DefaultAliasStore(
        user=[user("openai/gpt-4o")], apis=[api("openai", ("gpt-4o",), "openai/", True)]
    )
    assert isinstance(store.resolve("openai/gpt-4o"), LocalAlias)
    assert [(m["id"], m["kind"]) for m in store.list_models()] == [("openai/gpt-4o", "user")]


def test_forward_all_needs_prefix() -> None:
    with pytest.raises(ValueError):
        api("x", fwd=True)


# -- listing ------------------------------------------------------------------------


def test_list_models_entries_and_order() -> None:
    store = DefaultAliasStore(
        user=[user("u2"), user("u1")],
        model=[model("m2"), model("m1")],
        external=[external("e1")],
        apis=[api("openai", ("b", "a"), prefix="openai/"), api("other", ("z",))],
        created=1700000000,
    )
    entries = store.list_models()
    assert entries == [
        {"id": i, "object": "model", "created": 1700000000, "owned_by": o, "kind": k}
        for i, o, k in [
            ("u2", "server_core", "user"),
            ("u1", "server_core", "user"),
            ("m1", "server_core", "model"),
            ("m2", "server_core", "model"),
            ("e1", "server_core", "external"),
            ("openai/b", "openai", "api"),
            ("openai/a", "openai", "api"),
            ("z", "other", "api"),
        ]
    ]
    assert store.list_models() == entries  # stable
    assert [a.name for a in store.local_aliases()] == ["u2", "u1", "m1", "m2"]


def test_created_is_a_stable_int_by_default() -> None:
    store = DefaultAliasStore(user=[user("a")])
    first = store.list_models()[0]["created"]
    assert isinstance(first, int) and first > 1_600_000_000
    assert store.list_models()[0]["created"] == first


def test_every_listed_id_resolves_to_its_kind() -> None:
    store = DefaultAliasStore(
        user=[user("a")],
        model=[model("a"), model("b")],
        external=[external("b"), external("c")],
        apis=[api("p", ("c", "d"))],
    )
    listed = {m["id"]: m["kind"] for m in store.list_models()}
    # "b" is a model file and hides the external alias of the same name; "c" is external.
    assert listed == {"a": "user", "b": "model", "c": "external", "d": "api"}
    for model_id, kind in listed.items():
        found = store.resolve(model_id)
        got = found.source if isinstance(found, LocalAlias) else found.kind
        assert got == kind


def test_duplicates_within_one_kind_are_rejected() -> None:
    with pytest.raises(ValueError):
        DefaultAliasStore(user=[user("a"), user("a")])
    with pytest.raises(ValueError):
        DefaultAliasStore(apis=[api("p", ("x",)), api("p", ("y",))])
    with pytest.raises(ValueError):
        DefaultAliasStore(user=[model("a")])


# -- the alias values ---------------------------------------------------------------


def test_alias_values_are_frozen_copies() -> None:
    params: dict[str, Any] = {"stop": ["\n"], "temperature": 0.1}
    alias = LocalAlias("a", "/m/a.gguf", "user", params, ["--ctx-size", "2048"])  # type: ignore[arg-type]
    params["stop"].append("x")
    params["temperature"] = 9
    assert alias.request_params == {"stop": ["\n"], "temperature": 0.1}
    assert alias.context_params == ("--ctx-size", "2048")
    with pytest.raises(TypeError):
        alias.request_params["temperature"] = 1  # type: ignore[index]
    assert hash(alias) == hash(LocalAlias("a", "/m/a.gguf", "user", {}, ("--ctx-size", "2048")))


def test_remote_target_repr_hides_key_and_url_is_trimmed() -> None:
    target = RemoteTarget("e", "external", "http://h:1/v1/", "sk-secret", None, {})
    assert "sk-secret" not in repr(target)
    assert target.base_url == "http://h:1/v1"
    assert "key-openai" not in repr(api("openai", ("m",)))


def test_bad_kind_or_source() -> None:
    with pytest.raises(ValueError):
        LocalAlias("a", "/m", "file", {})
    with pytest.raises(ValueError):
        RemoteTarget("a", "local", "http://h", None, None, {})


# -- request_params merge -----------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
keys = st.sampled_from(["temperature", "max_tokens", "stop", "top_p", "seed", "n"]) | st.text()
bodies = st.dictionaries(keys, json_values, max_size=6)


@given(body=bodies, defaults=bodies)
def test_merge_fills_only_absent_keys(body: dict[str, Any], defaults: dict[str, Any]) -> None:
    body_before = copy.deepcopy(body)
    defaults_before = copy.deepcopy(defaults)
    merged = merge_request_params(body, defaults)
    assert merged is not body
    assert set(merged) == set(body) | set(defaults)
    for key, value in merged.items():
        expected = body[key] if key in body else defaults[key]
        assert value == expected
    # Client keys keep their original order and come first.
    assert list(merged)[: len(body)] == list(body)
    assert body == body_before and defaults == defaults_before


@given(body=bodies, defaults=bodies)
def test_merge_result_does_not_share_default_values(
    body: dict[str, Any], defaults: dict[str, Any]
) -> None:
    defaults_before = copy.deepcopy(defaults)
    merged = merge_request_params(body, defaults)
    for key, value in merged.items():
        if key not in body and isinstance(value, list | dict):
            value.clear()
    assert defaults == defaults_before


@given(body=bodies)
def test_merge_with_no_defaults_is_a_copy(body: dict[str, Any]) -> None:
    merged = merge_request_params(body, {})
    assert merged == body and merged is not body


def test_merge_explicit_null_counts_as_set() -> None:
    merged = merge_request_params({"max_tokens": None}, {"max_tokens": 64, "seed": 1})
    assert merged == {"max_tokens": None, "seed": 1}


def test_merge_nested_objects_are_not_merged() -> None:
    merged = merge_request_params(
        {"response_format": {"type": "text"}},
        {"response_format": {"type": "json_object", "schema": {}}, "logit_bias": {"1": 2}},
    )
    assert merged == {"response_format": {"type": "text"}, "logit_bias": {"1": 2}}


def test_merge_accepts_frozen_alias_defaults() -> None:
    alias = user("a", temperature=0.3, stop=["x"])
    merged = merge_request_params({"model": "a", "stop": None}, alias.request_params)
    assert merged == {"model": "a", "stop": None, "temperature": 0.3}
