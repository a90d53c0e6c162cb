"""Does a started model's chat template carry the messages? One probe per start.

A llama-server whose chat template drops the conversation still answers every chat
request, fluently, about nothing the client asked: with Jinja on (llama-server's
default), ``--chat-template gemma`` is read as template *text* and every prompt becomes
the word "gemma". Nothing in the reply says so. So once a managed server is ready, we
ask it to render a probe conversation (``POST /apply-template``) carrying a unique
marker per message. If the user's marker is not in the rendered prompt, the alias's
chat requests are refused with an error that says why (text completions still work).

The verdict is one of three: the template carries the messages, it drops them, or it
could not be checked (the server has no such route, or is an embeddings-only server):
an unchecked template is served as before, never refused on a guess.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from server_core.errors import ServerCoreError
from server_core.upstream import UpstreamClient, read_complete_body

__all__ = [
    "CHECKED_OK",
    "ChatTemplateBroken",
    "ChatTemplateProbe",
    "TemplateProbe",
    "TemplateVerdict",
    "probe_messages",
    "verdict_for",
]

log = Logger()

_MAX_RENDERED = 1 << 20  # a rendered probe is a few hundred bytes; more is not a prompt
_PROBE_TIMEOUT = 10.0

FIX_HINT = (
    "with Jinja on (llama-server's default) --chat-template NAME is read as template text: "
    "use --no-jinja --chat-template NAME for a built-in template, --chat-template-file FILE, "
    "or the GGUF's own template (no --chat-template)"
)


@dataclass(frozen=True)
class TemplateVerdict:
    """What the probe found: ``ok`` True (carries), False (drops), None (unchecked)."""

    ok: bool | None
    detail: str

    @property
    def status(self) -> str:
        return {True: "ok", False: "drops_messages", None: "unchecked"}[self.ok]


CHECKED_OK = TemplateVerdict(True, "the chat template carries the messages")


TemplateProbe = Callable[[str, str], "defer.Deferred[TemplateVerdict]"]
"""``probe(alias_name, base_url)``: the verdict for one started server."""


class ChatTemplateBroken(ServerCoreError):
    """A chat request for an alias whose template drops the messages."""

    status = 500
    type = "server_error"
    code = "chat_template_drops_messages"

    def __init__(self, alias: str) -> None:
        super().__init__(
            f"The model '{alias}' cannot chat here: its chat template drops the messages, "
            "so the model would never see your prompt. The server's operator must fix the "
            "alias's chat template (GET /running says how). Text completions "
            "(/v1/completions) still work."
        )


def probe_messages(marker: str) -> list[dict[str, str]]:
    """A tiny conversation whose every message carries ``marker`` and its role."""
    return [
        {"role": "system", "content": f"Be brief. system-{marker}"},
        {"role": "user", "content": f"Hello. user-{marker}"},
    ]


def verdict_for(marker: str, rendered: Any) -> TemplateVerdict:
    """Judge ``/apply-template``'s ``prompt`` for a probe built with ``marker``."""
    if not isinstance(rendered, str):
        return TemplateVerdict(None, "/apply-template answered without a prompt string")
    if f"user-{marker}" in rendered:
        return CHECKED_OK
    shown = rendered if len(rendered) <= 60 else rendered[:57] + "..."
    return TemplateVerdict(
        False,
        f"the chat template drops the messages (a probe conversation rendered as "
        f"{json.dumps(shown)}): {FIX_HINT}",
    )


class ChatTemplateProbe:
    """Renders a probe conversation on a started server and judges the prompt."""

    def __init__(self, client: UpstreamClient, clock: Any) -> None:
        self._client = client
        self._clock = clock

    def __call__(self, alias: str, base_url: str) -> defer.Deferred[TemplateVerdict]:
        return defer.ensureDeferred(self._probe(alias, base_url))

    async def _probe(self, alias: str, base_url: str) -> TemplateVerdict:
        marker = secrets.token_hex(8)
        try:
            response = await self._client.post_json(
                f"{base_url}/apply-template",
                {"messages": probe_messages(marker)},
                upstream_name=f"model '{alias}'",
            )
            body = await read_complete_body(
                response, limit=_MAX_RENDERED, idle_timeout=_PROBE_TIMEOUT, clock=self._clock
            )
        except defer.CancelledError:
            raise
        except Exception as exc:
            return TemplateVerdict(None, f"the chat template could not be checked ({exc})")
        if response.code != 200:
            return TemplateVerdict(
                None, f"the chat template could not be checked (/apply-template: {response.code})"
            )
        try:
            rendered = json.loads(body).get("prompt")
        except (ValueError, AttributeError):
            rendered = None
        return verdict_for(marker, rendered)
