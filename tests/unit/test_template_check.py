"""The chat-template probe: its verdict, and how the router acts on it.

How the shared context waits for the verdict: tests/unit/shared_context/test_context_probe.py.
"""

from __future__ import annotations

import pytest
import pytest_twisted

from server_core.template_check import (
    CHECKED_OK,
    ChatTemplateBroken,
    TemplateVerdict,
    probe_messages,
    verdict_for,
)
from tests.unit.test_router_state import LOCAL, make

BROKEN = TemplateVerdict(False, "the chat template drops the messages (...): use --no-jinja")


def test_a_prompt_with_the_users_marker_carries_the_messages() -> None:
    messages = probe_messages("c0ffee")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert all("c0ffee" in m["content"] for m in messages)
    rendered = "<|im_start|>user\nHello. user-c0ffee<|im_end|>\n<|im_start|>assistant\n"
    assert verdict_for("c0ffee", rendered) == CHECKED_OK
    assert verdict_for("c0ffee", rendered).status == "ok"


def test_a_prompt_without_it_drops_them_and_says_which_flag_fixes_it() -> None:
    verdict = verdict_for("c0ffee", "gemma")
    assert verdict.ok is False and verdict.status == "drops_messages"
    assert '"gemma"' in verdict.detail
    assert "--no-jinja --chat-template NAME" in verdict.detail
    assert "--chat-template-file" in verdict.detail
    # Another probe's marker is not this one's.
    assert verdict_for("c0ffee", "user-deadbeef").ok is False
    long = verdict_for("c0ffee", "x" * 500)
    assert "x" * 57 + "..." in long.detail and "x" * 61 not in long.detail


def test_no_prompt_is_no_verdict() -> None:
    for rendered in (None, 3, ["user-c0ffee"]):
        verdict = verdict_for("c0ffee", rendered)
        assert verdict.ok is None and verdict.status == "unchecked"


@pytest_twisted.ensureDeferred
async def test_the_router_refuses_chat_but_not_completions_for_such_a_lease() -> None:
    router, client, context = make()
    context.lease.chat_template_error = BROKEN.detail
    with pytest.raises(ChatTemplateBroken) as caught:
        await router.forward("/chat/completions", {"model": "local", "messages": []})
    assert context.lease.released == 1
    assert client.sent == []
    error = caught.value.to_dict()["error"]
    assert error["code"] == "chat_template_drops_messages"
    assert f"'{LOCAL.name}'" in error["message"] and "/v1/completions" in error["message"]
    assert "--" not in error["message"]  # the flags are the operator's business (/running)
    await router.forward("/completions", {"model": "local", "prompt": "x"})
    assert client.sent[0]["url"].endswith("/v1/completions")
