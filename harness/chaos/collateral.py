"""Collateral damage: unexpected failures that another request's fault explains.

A request whose own faults cannot make it fail may still fail because of another
request: the managed child it was talking to crashed, or server_core's connection pool
handed it a connection that another request's fault was closing. ``attribute_collateral``
excuses those, and says which request explains each (the report counts them apart).
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.chaos.kinds import SUCCEED
from harness.chaos.records import RequestRecord
from harness.client import DISCONNECTED, ERROR_EVENT, HTTP_ERROR

__all__ = ["CRASH_WINDOW", "STALE_WINDOW", "attribute_collateral"]

# A managed request failing this close to a crash of the managed child is collateral.
CRASH_WINDOW = 1.5
# An HTTP error this close to the end of a request that closed or aborted its upstream
# connection (same upstream) is collateral: a pool race (see attribute_collateral).
STALE_WINDOW = 0.1


def _ends_upstream_connection(r: RequestRecord) -> bool:
    """Did this request's end close or abort its upstream connection? (The upstream
    closed it, or server_core aborted it after an error event or a client that left.)"""
    if r.plan.closes_connection:
        return True
    if r.result.outcome in (ERROR_EVENT, DISCONNECTED):
        return True
    return r.result.outcome == HTTP_ERROR and r.plan.expect != SUCCEED


def attribute_collateral(records: Sequence[RequestRecord], *, strict: bool = False) -> None:
    """Excuse ``unexpected_failure``s that another request's fault explains.

    * ``crash``: the managed child died (``crash_after`` of a request it was serving)
      with this request in flight, or just before it was sent; nothing can save the
      streams of a dead process.
    * ``freeze``: the same for a managed child that a ``freeze`` request SIGSTOPped.
    * ``pool_race`` (not with ``strict``): an HTTP error while, on the same upstream, a
      request whose end closed or aborted its upstream connection ended within
      ``STALE_WINDOW``: the closing connection was handed out again by server_core's
      connection pool. Honest, but a robustness defect of the server: the report counts
      these apart, and ``--strict`` makes them violations.
    A record is excused only when its one violation is ``unexpected_failure``.
    """
    kills = [(r.alias, r.t_start, r.t_end) for r in records if r.plan.kills_process]
    freezes = [(r.alias, r.t_start, r.t_end) for r in records if r.plan.freezes_process]
    enders = [(r.alias, r.t_end, r.plan.index) for r in records if _ends_upstream_connection(r)]
    for r in records:
        if [v.code for v in r.violations] != ["unexpected_failure"]:
            continue
        if any(
            alias == r.alias and cs < r.t_end and r.t_start < ce + CRASH_WINDOW
            for alias, cs, ce in kills
        ):
            r.violations, r.collateral = [], "crash"
        elif any(
            alias == r.alias and cs < r.t_end and r.t_start < ce + CRASH_WINDOW
            for alias, cs, ce in freezes
        ):
            r.violations, r.collateral = [], "freeze"
        elif not strict and r.result.outcome == HTTP_ERROR:
            near = [
                i
                for alias, end, i in enders
                if alias == r.alias
                and i != r.plan.index
                and r.t_start - STALE_WINDOW <= end <= r.t_end + STALE_WINDOW
            ]
            if near:
                r.violations, r.collateral = [], "pool_race"
                r.collateral_of = near
