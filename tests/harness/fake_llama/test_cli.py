"""The command line: llama-server's flags, the ignored ones, the chat-template checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.fake_llama import Faults
from harness.fake_llama.cli import UsageError, parse_args


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
