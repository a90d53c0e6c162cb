"""The shared context's limits, and the errors a client sees when one is reached.

``ContextLimits`` is what the operator configures; each limit that turns a request away
has its own error (429 for one alias's concurrency, 503 for the queue), each carrying a
``Retry-After`` so a well-behaved client backs off instead of hammering.
"""

from __future__ import annotations

from dataclasses import dataclass

from server_core.errors import ContextError

__all__ = [
    "ContextLimits",
    "QueueFull",
    "QueueTimeout",
    "TooManyRequests",
    "queue_full",
    "queue_timeout",
    "too_many_requests",
]


@dataclass(frozen=True)
class ContextLimits:
    """How many servers run, how long idle ones live, how many requests may wait, and how
    long a request for another model lets the loaded one keep serving (``max_wait``)."""

    max_loaded: int = 1
    ttl: float = 300.0  # -1 never, 0 right after the last lease ends
    max_queue: int = 64
    queue_timeout: float = 300.0
    max_concurrent_per_alias: int | None = None
    retry_after: int = 5  # seconds suggested to clients turned away
    max_wait: float = 30.0  # a waiting swap's bound on same-model batching; 0 = arrival order
    min_resident: float = 0.0  # a just-loaded model is not swapped out sooner while wanted

    def retry_headers(self) -> dict[str, str]:
        """The ``Retry-After`` header sent with every refusal."""
        return {"Retry-After": str(self.retry_after)}


class TooManyRequests(ContextError):
    """One alias already serves (or queues) ``max_concurrent_per_alias`` requests."""

    status = 429
    type = "rate_limit_error"
    code = "too_many_requests"


class QueueFull(ContextError):
    """``max_queue`` requests already wait for a model."""

    status = 503
    code = "queue_full"


class QueueTimeout(ContextError):
    """A request waited ``queue_timeout`` seconds without getting a turn."""

    status = 503
    code = "queue_timeout"


def too_many_requests(limits: ContextLimits, alias_name: str) -> TooManyRequests:
    """The 429 for ``alias_name`` at its concurrency limit."""
    return TooManyRequests(
        f"The model '{alias_name}' already serves {limits.max_concurrent_per_alias} "
        "requests at once; retry later.",
        headers=limits.retry_headers(),
    )


def queue_full(limits: ContextLimits) -> QueueFull:
    """The 503 for a request arriving at a full queue."""
    return QueueFull(
        f"Too many requests are waiting for a model ({limits.max_queue}); retry later.",
        headers=limits.retry_headers(),
    )


def queue_timeout(limits: ContextLimits, alias_name: str) -> QueueTimeout:
    """The 503 for a request that waited too long for ``alias_name``."""
    return QueueTimeout(
        f"Waited {limits.queue_timeout:g} s for the model "
        f"'{alias_name}' without getting a turn; retry later.",
        headers=limits.retry_headers(),
    )
