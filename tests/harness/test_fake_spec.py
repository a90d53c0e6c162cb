"""Pure parts of the fake llama-server: fault SPEC syntax, generation, CLI parsing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.fake_llama import (
    VOCABULARY,
    Faults,
    FaultSpecError,
    TemplateError,
    chat_prompt,
    embedding_vector,
    expected_text,
    parse_duration,
    parse_faults,
    plan_generation,
    resolve_template,
)
from harness.fake_llama.cli import UsageError, parse_args
from harness.fake_llama.faults import COUNT_KEYS, DURATION_KEYS, PROCESS_KEYS, REQUEST_KEYS
from harness.fake_llama.generate import RequestError
from harness.fake_llama.templates import BUILTIN_TEMPLATES, CHATML_TEMPLATE_SOURCE

CHAT = {"messages": [{"role": "user", "content": "tell me a story"}]}


# -- fault SPEC ------------------------------------------------------------------------


def test_durations_take_ms_s_and_bare_ms() -> None:
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2s") == 2.0
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("20") == 0.02
    for bad in ("", "ms", "5m", "-1s", "1h", "abc"):
        with pytest.raises(FaultSpecError):
            parse_duration(bad)


def test_spec_parses_every_kind() -> None:
    f = parse_faults(
        "load_delay=2s, crash_on_load, ttft=500ms,token_delay=20,jitter=5ms,"
        "reset_after=5,status=503,p=0.3,split_utf8,crlf,ping=100ms"
    )
    assert f.load_delay == 2.0
    assert f.crash_on_load == 0.0
    assert f.ttft == 0.5 and f.token_delay == 0.02 and f.jitter == 0.005
    assert f.reset_after == 5 and f.status == 503 and f.p == 0.3
    assert f.split_utf8 and f.crlf and f.ping == 0.1
    assert f.close_after is None and not f.hang
    assert parse_faults("crash_on_load=300ms").crash_on_load == pytest.approx(0.3)


@pytest.mark.parametrize(
    "spec",
    ["nope=1", "reset_after=-1", "reset_after=x", "status=99", "status=600", "p=1.5", "hang=2",
     "ttft", "ttft=soon"],
)  # fmt: skip
def test_spec_errors_name_the_item(spec: str) -> None:
    with pytest.raises(FaultSpecError) as e:
        parse_faults(spec)
    assert spec.split("=")[0] in str(e.value)


def test_process_and_request_parts_split_and_merge() -> None:
    f = parse_faults("load_delay=1s,ignore_sigterm,ttft=10ms,reset_after=3")
    assert f.process_part().keys == {"load_delay", "ignore_sigterm"}
    assert f.request_part().keys == {"ttft", "reset_after"}
    merged = f.merged(parse_faults("ttft=20ms,stall_after=2"))
    assert merged.ttft == 0.02 and merged.stall_after == 2 and merged.reset_after == 3
    with pytest.raises(FaultSpecError):
        parse_faults("load_delay=1s", allowed=REQUEST_KEYS)
    assert PROCESS_KEYS.isdisjoint(REQUEST_KEYS)


_item = st.one_of(
    st.sampled_from(sorted(DURATION_KEYS)).flatmap(
        lambda k: st.integers(0, 100_000).map(lambda ms: f"{k}={ms}ms")
    ),
    st.sampled_from(sorted(COUNT_KEYS)).flatmap(
        lambda k: st.integers(0, 1000).map(lambda n: f"{k}={n}")
    ),
    st.sampled_from(["hang", "split_utf8", "crlf", "never_ready", "bind_fail", "crash_on_load"]),
    st.integers(100, 599).map(lambda s: f"status={s}"),
    st.integers(0, 100).map(lambda p: f"p={p / 100}"),
)


@given(st.lists(_item, max_size=8))
def test_spec_round_trips(items: list[str]) -> None:
    f = parse_faults(",".join(items))
    again = parse_faults(f.to_spec())
    assert again == f
    assert again.keys == f.keys


# -- generation ------------------------------------------------------------------------


def test_expected_text_is_deterministic_and_seeded() -> None:
    tokens, finish = expected_text(CHAT)
    assert (tokens, finish) == expected_text(dict(CHAT))
    assert finish == "stop"
    assert 4 <= len(tokens) <= 24
    assert all(t.startswith(" ") and t[1:] in VOCABULARY for t in tokens)
    assert expected_text(CHAT, seed=1) != (tokens, finish)
    assert expected_text({**CHAT, "seed": 7}) != (tokens, finish)
    assert expected_text({**CHAT, "temperature": 0.1}) != (tokens, finish)


def test_max_tokens_cuts_a_prefix_with_length() -> None:
    full, _ = expected_text(CHAT)
    short, finish = expected_text({**CHAT, "max_tokens": 2})
    assert short == full[:2] and finish == "length"
    # n_predict wins over max_completion_tokens, which wins over max_tokens.
    body = {**CHAT, "max_tokens": 1, "max_completion_tokens": 2, "n_predict": 3}
    assert len(expected_text(body)[0]) == 3
    # Reaching the limit exactly where EOS would come is still "length".
    assert expected_text({**CHAT, "max_tokens": len(full)}) == (full, "length")
    assert expected_text({**CHAT, "max_tokens": len(full) + 1}) == (full, "stop")
    assert expected_text({**CHAT, "max_tokens": 0}) == ([], "length")


def test_ignore_eos_runs_to_the_limit() -> None:
    tokens, finish = expected_text({**CHAT, "ignore_eos": True, "max_tokens": 60})
    assert len(tokens) == 60 and finish == "length"


def test_stop_strings_cut_inside_a_token() -> None:
    full, _ = expected_text(CHAT)
    text = "".join(full)
    stop = full[2][1:3]  # two letters of the third word
    tokens, finish = expected_text({**CHAT, "stop": [stop]})
    assert finish == "stop"
    assert "".join(tokens) == text[: text.index(stop)]


def test_prompt_tokens_and_context_limit() -> None:
    gen = plan_generation(CHAT)
    assert gen.n_prompt == 5  # "user:" + 4 words
    with pytest.raises(RequestError) as e:
        plan_generation({"prompt": "a " * 10}, n_ctx=10)
    assert e.value.status == 400
    assert e.value.body()["error"]["type"] == "exceed_context_size_error"
    assert e.value.body()["error"]["n_prompt_tokens"] == 10
    assert e.value.body()["error"]["n_ctx"] == 10
    # The context also caps the generation.
    tokens, finish = expected_text({"prompt": "a b", "ignore_eos": True}, n_ctx=7)
    assert len(tokens) == 5 and finish == "length"


def test_embeddings_are_deterministic_unit_vectors() -> None:
    v = embedding_vector("hello")
    assert v == embedding_vector("hello")
    assert v != embedding_vector("hello", seed=1)
    assert math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-9)


# -- command line ----------------------------------------------------------------------


def test_cli_accepts_llama_server_flags() -> None:
    opts, warnings = parse_args(
        ["-m", "x.gguf", "--port", "0", "-a", "qwen", "-c", "2048", "-np", "4", "--api-key",
         "k1,k2", "--embeddings", "--metrics", "--no-webui", "-ngl", "99", "--seed", "5",
         "--fault", "ttft=1s", "--fault=reset_after=2", "-fa", "on", "--cont-batching",
         "--temp", "-0.5", "--jinja", "--sse-ping-interval", "2.5"]
    )  # fmt: skip
    assert opts.model == "x.gguf" and opts.port == 0 and opts.alias == "qwen"
    assert opts.ctx_size == 2048 and opts.parallel == 4 and opts.api_keys == ["k1", "k2"]
    assert opts.embeddings and opts.metrics and not opts.webui and opts.seed == 5
    assert opts.faults == ["ttft=1s", "reset_after=2"]
    assert opts.sse_ping_interval == 2.5
    assert opts.ignored == ["-fa", "on", "--cont-batching", "--temp", "-0.5"]
    assert len(warnings) == 3 and all("ignores" in w for w in warnings)
    assert isinstance(Faults(), Faults)


def test_cli_reads_chat_template_flags(tmp_path: Path) -> None:
    opts, warnings = parse_args(["--chat-template", "gemma", "--no-jinja"])
    assert opts.chat_template == "gemma" and not opts.jinja and warnings == []
    path = tmp_path / "t.jinja"
    path.write_text("{{ messages }}", encoding="utf-8")
    opts, _ = parse_args(["--chat-template", "gemma", "--chat-template-file", str(path)])
    assert opts.chat_template == "{{ messages }}" and opts.jinja  # the last flag wins
    assert opts.to_config(Faults()).chat_template == "{{ messages }}"
    # llama-server checks the template after every flag, whatever their order.
    with pytest.raises(UsageError, match="not supported: nosuch"):
        parse_args(["--chat-template", "nosuch", "--no-jinja"])
    with pytest.raises(UsageError, match="failed to open file"):
        parse_args(["--chat-template-file", str(tmp_path / "missing")])


# -- chat templates --------------------------------------------------------------------

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]


def test_templates_follow_jinja_and_builtin_rules() -> None:
    assert resolve_template(None).render(MESSAGES) == chat_prompt(MESSAGES)
    assert resolve_template("gemma").render(MESSAGES) == "gemma"
    assert resolve_template("{{ x }}").render(MESSAGES) == chat_prompt(MESSAGES)
    assert resolve_template("{% if x %}").source == "{% if x %}"
    # With Jinja on, "chatml" is the one name llama.cpp swaps for its ChatML template.
    chatml = "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
    assert resolve_template("chatml").render(MESSAGES) == chatml + "<|im_start|>assistant\n"
    assert resolve_template("chatml").source == CHATML_TEMPLATE_SOURCE
    assert resolve_template("chatml", jinja=False).render(MESSAGES).startswith(chatml)
    for name in BUILTIN_TEMPLATES:
        template = resolve_template(name, jinja=False)
        assert template.source == name and "hi" in template.render(MESSAGES)
    with pytest.raises(TemplateError):
        resolve_template("{{ x }}", jinja=False)
