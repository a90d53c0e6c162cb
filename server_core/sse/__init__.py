"""Server-Sent Events: the pure codec, and the Twisted writers built on it.

``codec`` (no I/O) is shared with the harness, and ``import server_core.sse`` loads only it.
``writer.SseResponse`` ends a client's stream exactly once; ``direct.DirectSse`` streams the
events server_core makes itself; ``forwarded.ForwardedSse`` relays an upstream event stream.
Those need twisted.web, so their names here load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from server_core.sse.codec import (
    DONE,
    DONE_FRAME,
    Comment,
    Event,
    SseDecoder,
    decode_all,
    encode_comment,
    encode_event,
)

if TYPE_CHECKING:
    from server_core.sse.direct import DirectEvent, DirectSse
    from server_core.sse.forwarded import ForwardedSse
    from server_core.sse.writer import SseResponse

__all__ = [
    "DONE",
    "DONE_FRAME",
    "Comment",
    "DirectEvent",
    "DirectSse",
    "Event",
    "ForwardedSse",
    "SseDecoder",
    "SseResponse",
    "decode_all",
    "encode_comment",
    "encode_event",
]

_LAZY = {
    "SseResponse": "writer",
    "DirectEvent": "direct",
    "DirectSse": "direct",
    "ForwardedSse": "forwarded",
}


def __getattr__(name: str) -> object:
    # Loaded on first use so that the harness, which needs only the codec, never
    # imports twisted.web (nor server_core.upstream) through this package.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
