"""Which request dialects a target serves, when the run was not told (``--dialects``).

One short fault-free stream per dialect to one alias: a 404 or 405 (the route is not
there, on the server or on its upstream) leaves the dialect out, any other answer keeps
it (a served route that then fails is what chaos is for). The resolved set goes into
the options, so the reproduce command names it and replays without probing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from harness.chaos.bodies import build_body
from harness.chaos.kinds import DIALECT_ENDPOINTS, DIALECT_NAMES
from harness.chaos.options import ChaosOptions
from harness.client import stream_request

__all__ = ["NOT_SERVED", "resolve_dialects", "served_dialects"]

NOT_SERVED = frozenset({404, 405})


async def served_dialects(
    url: str, alias: str, reactor: Any, timeout: float = 10.0
) -> tuple[str, ...]:
    """The dialects of ``DIALECT_NAMES`` whose endpoint ``url`` serves for ``alias``."""
    served: list[str] = []
    for name in DIALECT_NAMES:
        endpoint = DIALECT_ENDPOINTS[name]
        body = build_body(endpoint, alias, "chaos probe", 1, stream=True)
        r = await stream_request(url + endpoint, body, timeout=timeout, reactor=reactor)
        if r.status is not None and r.status not in NOT_SERVED:
            served.append(name)
    return tuple(served)


async def resolve_dialects(
    options: ChaosOptions, url: str, alias: str, reactor: Any
) -> tuple[ChaosOptions, str | None]:
    """``options`` with its dialects set (probed when None), or an error: none served."""
    if options.dialects is not None:
        return options, None
    served = await served_dialects(url, alias, reactor)
    if not served:
        return options, f"{url} serves none of the dialects {', '.join(DIALECT_NAMES)}"
    return dataclasses.replace(options, dialects=served), None
