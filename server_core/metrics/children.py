"""The managed children's own metrics: each ready llama-server's ``llamacpp:*`` families,
re-exported with a ``model`` label, so one scrape of server_core sees everything.

llama-server started with ``--metrics`` (server_core passes it unless
``llama_server.child_metrics: false``) serves Prometheus text on ``/metrics``. At each
scrape of server_core, ``ChildMetrics`` asks every *ready* child at once, under a short
deadline, parses the answers with ``prometheus_client.parser``, keeps the families named
``llamacpp:*`` (a child's other families could collide with server_core's own), adds
``model="<alias>"`` to every sample (replacing a ``model`` label the child set itself:
here the label says which child spoke) and renders one exposition, each family's HELP
and TYPE once (the first child's), the samples of all children beneath them. A family
another child typed differently is left out for that child rather than mixed.

A child that does not answer in time, answers with an error status, a body over the size
limit or text that does not parse is skipped and counted in
``server_core_child_metrics_scrape_failures_total{model=...}``: it never breaks the
scrape. A child that is not ready (starting, stopping, stopped) is not asked, so a model
that stopped leaves no samples behind. Counters without the ``_total`` suffix are
normalised to it by the parser, as any Prometheus client library writes them.

A leaf module like its package: the HTTP request comes in as ``fetch`` (composition
passes one built on the upstream client, with the size limit), time as a clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from server_core.interfaces import ISharedContext

__all__ = [
    "FAILURES",
    "MAX_BYTES",
    "PREFIX",
    "TIMEOUT",
    "ChildMetrics",
    "Fetch",
    "parse",
    "relabelled",
]

log = Logger()

Fetch = Callable[[str], Awaitable[bytes]]
"""``fetch(url)``: the body of a 200 answer (at most ``MAX_BYTES``), or an exception."""

PREFIX = "llamacpp:"
TIMEOUT = 1.0
"""Seconds a child has to answer; llama-server answers ``/metrics`` in milliseconds."""
MAX_BYTES = 1024 * 1024
"""The most a child's answer may hold (a few kB in practice)."""
FAILURES = "server_core_child_metrics_scrape_failures"
_READY = "ready"


class ChildMetrics:
    """Scrapes the ready children of ``context`` and renders their families (module doc)."""

    def __init__(
        self,
        context: ISharedContext,
        fetch: Fetch,
        clock: IReactorTime,
        *,
        timeout: float = TIMEOUT,
        prefix: str = PREFIX,
    ) -> None:
        self._context = context
        self._fetch = fetch
        self._clock = clock
        self._timeout = timeout
        self._prefix = prefix
        self._failures: dict[str, int] = {}

    async def render(self) -> bytes:
        """The exposition of every ready child's families and of the failure counter."""
        targets = self._targets()
        answers = await defer.gatherResults(
            [defer.ensureDeferred(self._scrape(alias, url)) for alias, url in targets]
        )
        children = [
            (alias, families)
            for (alias, _), families in zip(targets, answers, strict=True)
            if families is not None
        ]
        merged = relabelled(children, self._prefix)
        return generate_latest(_Collected([*merged, self._failure_family()]))

    def failures(self) -> dict[str, int]:
        """Failed scrapes so far, per alias."""
        return dict(self._failures)

    def _targets(self) -> list[tuple[str, str]]:
        """(alias, base URL) of each child that is ready now, by alias."""
        targets = []
        for row in self._context.running():
            alias = row.get("alias")
            process = self._context.process_for(alias) if isinstance(alias, str) else None
            if process is None or process.state != _READY or not process.base_url:
                continue
            targets.append((str(alias), str(process.base_url)))
        return sorted(targets)

    async def _scrape(self, alias: str, base_url: str) -> list[Metric] | None:
        """One child's families; None (and counted) on any failure."""
        answer = defer.ensureDeferred(_awaited(self._fetch(base_url + "/metrics")))
        answer.addTimeout(self._timeout, self._clock)
        try:
            return parse(await answer)
        except Exception as exc:
            self._failures[alias] = self._failures.get(alias, 0) + 1
            log.debug("scraping {alias}'s /metrics failed: {why!r}", alias=alias, why=exc)
            return None

    def _failure_family(self) -> Metric:
        family = CounterMetricFamily(
            FAILURES,
            "Scrapes of a managed llama-server's /metrics that failed (no answer in time, "
            "an error status, too large or not Prometheus text); its samples were left out.",
            labels=["model"],
        )
        for alias, count in sorted(self._failures.items()):
            family.add_metric([alias], count)
        return family


def parse(body: bytes) -> list[Metric]:
    """Every family of a Prometheus text body; ``ValueError`` when it is not one."""
    return list(text_string_to_metric_families(body.decode("utf-8")))


def relabelled(children: list[tuple[str, list[Metric]]], prefix: str = PREFIX) -> list[Metric]:
    """The families named ``prefix*`` of each ``(alias, families)``, merged by name (the
    first child's HELP and TYPE), every sample labelled ``model=alias``."""
    merged: dict[str, Metric] = {}
    for alias, families in children:
        for family in families:
            if not family.name.startswith(prefix):
                continue
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            elif into.type != family.type:
                continue  # another build's idea of this family: not mixed in
            into.samples.extend(
                Sample(s.name, {**s.labels, "model": alias}, s.value, s.timestamp)
                for s in family.samples
            )
    return list(merged.values())


async def _awaited(result: Awaitable[bytes]) -> bytes:
    return await result


class _Collected:
    """Ready families, in the shape ``generate_latest`` collects from."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)

    def describe(self) -> list[Any]:
        return []
