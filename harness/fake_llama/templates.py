"""Chat templates: how a chat request's ``messages`` become the prompt the fake counts.

llama-server (llama.cpp as vendored in llama-cpp-python 0.3.36) has Jinja on by
default. Then ``--chat-template VALUE`` (or the text of ``--chat-template-file``) is
Jinja template *text*: ``--chat-template gemma`` renders every conversation as the
literal word ``gemma``; only ``chatml`` is special (llama.cpp substitutes its own
ChatML template). With ``--no-jinja`` VALUE must name a built-in template; any
other value stops the server at start. Without a template flag the model's own
template is used: for the fake that is its ``role: content`` line format
(:func:`harness.fake_llama.generate.chat_prompt`).

The fake cannot run Jinja, so it approximates: template text containing ``{{`` or
``{%`` renders the messages with the fake's line format; text without them renders
as itself, literally. Built-in names render with a simple turn format (a few names
with their real markers, the others with the line format). The rendered prompt is
what ``/apply-template`` returns and what a chat request's ``prompt_tokens`` count;
the generated text never depends on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.fake_llama.generate import chat_prompt, content_text

__all__ = [
    "BUILTIN_TEMPLATES",
    "CHATML_TEMPLATE_SOURCE",
    "DEFAULT_TEMPLATE_SOURCE",
    "ChatTemplate",
    "TemplateError",
    "resolve_template",
]

# What /props shows as the "GGUF's own" template: the fake's line format in Jinja.
DEFAULT_TEMPLATE_SOURCE = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"

# llama.cpp's CHATML_TEMPLATE_SRC (common/chat.cpp), used for ``--chat-template chatml``.
CHATML_TEMPLATE_SOURCE = (
    "{%- for message in messages -%}\n"
    "  {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "  {{- '<|im_start|>assistant\\n' -}}\n"
    "{%- endif -%}"
)

# llama.cpp's LLM_CHAT_TEMPLATES (src/llama-chat.cpp): the names --no-jinja accepts.
BUILTIN_TEMPLATES: tuple[str, ...] = (
    "chatml", "llama2", "llama2-sys", "llama2-sys-bos", "llama2-sys-strip", "mistral-v1",
    "mistral-v3", "mistral-v3-tekken", "mistral-v7", "mistral-v7-tekken", "phi3", "phi4",
    "falcon3", "zephyr", "monarch", "gemma", "orion", "openchat", "vicuna", "vicuna-orca",
    "deepseek", "deepseek2", "deepseek3", "deepseek-ocr", "command-r", "llama3", "chatglm3",
    "chatglm4", "glmedge", "minicpm", "exaone3", "exaone4", "exaone-moe", "rwkv-world",
    "granite", "granite-4.0", "granite-4.1", "gigachat", "megrez", "yandex", "bailing",
    "bailing-think", "bailing2", "llama4", "smolvlm", "hunyuan-moe", "gpt-oss", "hunyuan-dense",
    "hunyuan-vl", "kimi-k2", "seed_oss", "grok-2", "pangu-embedded", "solar-open",
)  # fmt: skip


class TemplateError(ValueError):
    """A chat template llama-server refuses at start (``--no-jinja`` with an unknown name)."""


@dataclass(frozen=True)
class _TurnFormat:
    """A built-in template as llama.cpp's legacy renderer writes it: one turn per message."""

    start: str  # "{role}" is replaced by the (renamed) role
    end: str
    generation_prompt: str  # appended after the last turn (add_generation_prompt)
    trim: bool = False  # llama.cpp trims the content for some formats
    model_role: str = "assistant"  # gemma calls the assistant "model"

    def render(self, messages: Sequence[Any]) -> str:
        out = []
        for msg in messages:
            if not isinstance(msg, Mapping):
                continue
            role = msg.get("role") if isinstance(msg.get("role"), str) else ""
            role = self.model_role if role == "assistant" else role
            text = content_text(msg.get("content"))
            out.append(self.start.format(role=role) + (text.strip() if self.trim else text))
            out.append(self.end)
        return "".join(out) + self.generation_prompt


# The built-ins the fake writes with their real markers; any other name uses the
# fake's line format (a test rarely cares which markers a prompt carries).
_TURN_FORMATS: dict[str, _TurnFormat] = {
    "chatml": _TurnFormat("<|im_start|>{role}\n", "<|im_end|>\n", "<|im_start|>assistant\n"),
    "phi3": _TurnFormat("<|{role}|>\n", "<|end|>\n", "<|assistant|>\n"),
    "zephyr": _TurnFormat("<|{role}|>\n", "<|endoftext|>\n", "<|assistant|>\n"),
    "gemma": _TurnFormat(
        "<start_of_turn>{role}\n", "<end_of_turn>\n", "<start_of_turn>model\n", True, "model"
    ),
    "llama3": _TurnFormat(
        "<|start_header_id|>{role}<|end_header_id|>\n\n",
        "<|eot_id|>",
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        trim=True,
    ),
}


@dataclass(frozen=True)
class ChatTemplate:
    """The chat template in force: its text (``/props``' ``chat_template``) and its rendering."""

    source: str
    builtin: str | None = None  # a built-in format by name
    literal: bool = False  # Jinja text without a tag: renders as itself

    def render(self, messages: Sequence[Any]) -> str:
        """The prompt for ``messages``."""
        if self.literal:
            return self.source
        fmt = _TURN_FORMATS.get(self.builtin) if self.builtin is not None else None
        return chat_prompt(messages) if fmt is None else fmt.render(messages)


def resolve_template(value: str | None, *, jinja: bool = True) -> ChatTemplate:
    """The template ``--chat-template VALUE`` selects (None or "": the model's own).

    Raises TemplateError where llama-server exits at start: ``jinja=False`` with a
    value that is not a built-in name.
    """
    if not value:
        return ChatTemplate(DEFAULT_TEMPLATE_SOURCE)
    if not jinja:
        if value not in BUILTIN_TEMPLATES:
            raise TemplateError(
                f"error: the supplied chat template is not supported: {value}\n"
                "note: llama.cpp was started without --jinja, we only support commonly used "
                "templates"
            )
        return ChatTemplate(value, builtin=value)
    if value == "chatml":
        return ChatTemplate(CHATML_TEMPLATE_SOURCE, builtin="chatml")
    if "{{" in value or "{%" in value:
        return ChatTemplate(value)
    return ChatTemplate(value, literal=True)
