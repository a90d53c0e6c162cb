"""The shared context: which llama-server processes run, leases on them, swaps, TTL, queue.

``context.DefaultSharedContext`` is the scheduler; ``lease.Lease`` is what a request holds;
``limits`` holds ``ContextLimits`` and the 429/503 refusals. ``_slot`` (one alias's server
lifecycle) and ``_waiters`` (the arrival-order queue) are its internals.
"""

from __future__ import annotations

from server_core.shared_context.context import DefaultSharedContext, ProcessFactory
from server_core.shared_context.lease import Lease
from server_core.shared_context.limits import (
    ContextLimits,
    QueueFull,
    QueueTimeout,
    TooManyRequests,
)

__all__ = [
    "ContextLimits",
    "DefaultSharedContext",
    "Lease",
    "ProcessFactory",
    "QueueFull",
    "QueueTimeout",
    "TooManyRequests",
]
