"""A fake llama.cpp ``llama-server``: same flags, same HTTP API, scripted faults.

Public API::

    expected_text(request_body, seed=0) -> (tokens, finish_reason)
    responses_to_chat(body), anthropic_to_chat(body)  # the chat body whose text they get
    FakeConfig, FakeServer, start_fake_server(config, reactor) -> Deferred[FakeServer]
    FakeLlamaProcess(args, faults=...)  # the command as a child process
    Faults, parse_faults(spec)          # the fault SPEC language
    resolve_template(value, jinja=True) -> ChatTemplate  # what --chat-template selects

See docs/fake-llama-server.md.
"""

from harness.fake_llama.config import FakeConfig, Stats
from harness.fake_llama.faults import Faults, FaultSpecError, parse_duration, parse_faults
from harness.fake_llama.generate import (
    VOCABULARY,
    chat_prompt,
    embedding_vector,
    expected_text,
    plan_generation,
)
from harness.fake_llama.messages_api import anthropic_to_chat
from harness.fake_llama.process import FakeLlamaProcess, ProcessExited
from harness.fake_llama.responses_api import responses_to_chat
from harness.fake_llama.server import BindError, FakeServer, LoadError, start_fake_server
from harness.fake_llama.templates import ChatTemplate, TemplateError, resolve_template

__all__ = [
    "VOCABULARY",
    "BindError",
    "ChatTemplate",
    "FakeConfig",
    "FakeLlamaProcess",
    "FakeServer",
    "FaultSpecError",
    "Faults",
    "LoadError",
    "ProcessExited",
    "Stats",
    "TemplateError",
    "anthropic_to_chat",
    "chat_prompt",
    "embedding_vector",
    "expected_text",
    "parse_duration",
    "parse_faults",
    "plan_generation",
    "resolve_template",
    "responses_to_chat",
    "start_fake_server",
]
