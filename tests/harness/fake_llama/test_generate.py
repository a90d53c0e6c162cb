"""The deterministic "model": text, limits, stop strings, prompt size, embeddings."""

from __future__ import annotations

import math

import pytest

from harness.fake_llama import VOCABULARY, embedding_vector, expected_text, plan_generation
from harness.fake_llama.generate import RequestError
from tests.harness.fake_llama._support import CHAT


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
