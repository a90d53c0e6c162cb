"""One clean stream per alias: the warm-up before a run and the check after a restart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.chaos.stack import SpawnedStack
from harness.client import DONE, stream_request

__all__ = ["first_unclean"]


async def first_unclean(
    stack: SpawnedStack, aliases: Sequence[str], reactor: Any, content: str
) -> str | None:
    """Stream a short fault-free chat to each alias in turn; the first that fails, described."""
    for alias in aliases:
        body = {
            "model": alias,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 4,
            "stream": True,
        }
        r = await stream_request(
            stack.url + "/v1/chat/completions",
            body,
            timeout=stack.settings.start_timeout + 10,
            reactor=reactor,
        )
        if r.outcome != DONE:
            return f"{alias}: {r.outcome} {r.summary()}"
    return None
