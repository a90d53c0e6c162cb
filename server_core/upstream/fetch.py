"""A small whole-body GET: the body of a 200 answer, bounded, or an exception.

For server_core's own reads of a managed llama-server (its ``/metrics``, for
``server_core.metrics.children``): the request goes through the ``UpstreamClient`` (its
pool, timeouts and failure mapping), the body through the one body-reading policy
(``read_complete_body``). Another status is an ``UpstreamError`` with that status.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from server_core.errors import UpstreamError
from server_core.upstream.body import read_complete_body
from server_core.upstream.client import UpstreamClient

__all__ = ["fetch_body"]


async def fetch_body(
    client: UpstreamClient,
    url: str,
    *,
    limit: int,
    clock: IReactorTime,
    upstream_name: str = "llama-server",
) -> bytes:
    """GET ``url``; its body when the status is 200 and it holds at most ``limit`` bytes.

    Cancelling aborts the request or the body's connection (the caller's deadline).
    """
    response = await client.get(url, upstream_name=upstream_name)
    body = await read_complete_body(response, limit=limit, idle_timeout=None, clock=clock)
    if response.code != 200:
        raise UpstreamError(f"{upstream_name} answered {url} with status {response.code}")
    return body
