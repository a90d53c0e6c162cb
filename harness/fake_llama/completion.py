"""``CompletionJob``: a completion request from its slot to its last token.

Shared by the two deliveries: ``plain.py`` (one JSON body) and ``stream.py`` (an
SSE stream). Both get a slot from the pool (queueing like llama-server), then
``deliver()`` the planned tokens at the faults' pace.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.web.server import Request

from harness.fake_llama._server_view import ServerView
from harness.fake_llama.config import generation_settings
from harness.fake_llama.faults import Faults
from harness.fake_llama.generate import Generation
from harness.fake_llama.jobs import BaseJob
from harness.fake_llama.messages_api import MessagesPayloads
from harness.fake_llama.meter import TokenMeter
from harness.fake_llama.payloads import CompletionPayloads, StreamPayloads, completion_id
from harness.fake_llama.responses_api import ResponsesPayloads

__all__ = ["CompletionJob"]


class CompletionJob(BaseJob):
    """One completion request; subclasses deliver it.

    ``kind``: ``chat``, ``cmpl`` (OpenAI text), ``native`` (``/completion``), ``resp``
    (OpenAI Responses) or ``anthropic`` (Anthropic Messages); the last two arrive with
    ``body`` already converted to a chat body, as llama-server converts them.
    """

    def __init__(
        self,
        server: ServerView,
        request: Request,
        kind: str,
        body: dict[str, Any],
        gen: Generation,
        faults: Faults,
        rng: random.Random,
    ) -> None:
        super().__init__(server, request, faults)
        self.kind = kind
        self.gen = gen
        self.rng = rng
        self.stream = body.get("stream") is True
        self.meter = TokenMeter(self.reactor, gen.n_prompt)
        self.payloads = self._payloads(body, server)

    def _payloads(self, body: dict[str, Any], server: ServerView) -> StreamPayloads:
        """The shapes of the API this request came in by (``kind``)."""
        created = int(self.reactor.seconds())
        alias = server.config.model_alias
        if self.kind == "resp":
            return ResponsesPayloads(
                self.gen, self.meter, rng=self.rng, created=created, alias=alias
            )
        if self.kind == "anthropic":
            return MessagesPayloads(
                self.gen, self.meter, msg_id=completion_id(self.rng), alias=alias
            )
        return CompletionPayloads(
            self.kind,
            body,
            self.gen,
            self.meter,
            cmpl_id=completion_id(self.rng),
            created=created,
            alias=alias,
            settings={**generation_settings(server.config), "stream": self.stream},
        )

    def token_gap(self) -> float:
        """The delay before the next token: ``token_delay`` ± ``jitter``."""
        f = self.faults
        gap = f.token_delay
        if f.jitter:
            gap += self.rng.uniform(-f.jitter, f.jitter)
        return max(0.0, gap)

    async def run(self) -> None:
        await self.before_headers()
        self.slot = await self.server.slots.acquire()
        self.server.task_counter += 1
        self.task_id = self.server.task_counter
        self.server.slots.task_of[self.slot] = self.task_id
        self.meter.start()
        self.server.debug(
            f"slot launch_slot_: id {self.slot:2d} | task {self.task_id} | processing task"
        )
        await self.deliver()
        self.meter.account(self.server.stats)

    async def deliver(self) -> None:
        """Send the tokens (subclasses): the slot is held meanwhile."""
        raise NotImplementedError
