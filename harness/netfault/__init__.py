"""netfault: a TCP fault proxy with Toxiproxy's toxics (https://github.com/Shopify/toxiproxy).

``FaultProxy`` listens on a TCP port, opens one upstream connection per accepted client
and relays bytes both ways through a chain of *toxics* per direction. Toxicity is rolled
once per connection and toxic from ``(seed, connection number, toxic name)``, so a run
is reproducible from its seed; timing goes through the injected reactor, so tests drive
it with ``MemoryReactorClock``. See ``docs/netfault.md``.

Where things live: ``_toxic`` (the vocabulary and its parsing), ``_stage`` and
``_toxic_stages`` (what a toxic does to the bytes), ``_link`` (one direction's
pipeline and flow control), ``_connection`` (the sockets), ``_proxy`` (``FaultProxy``),
``_control`` (the JSON API), ``_cli`` (the ``netfault`` console script).
"""

from harness.netfault._cli import main, parse_address
from harness.netfault._control import MAX_CONTROL_BODY
from harness.netfault._errors import (
    DuplicateToxicError,
    InvalidToxicError,
    NetfaultError,
    ToxicNotFoundError,
)
from harness.netfault._link import HIGH_WATER, LOW_WATER
from harness.netfault._proxy import FaultProxy
from harness.netfault._stats import DirectionStats, ProxyStats
from harness.netfault._toxic import STREAMS, TOXIC_TYPES, Toxic, parse_toxic_spec

__all__ = [
    "HIGH_WATER",
    "LOW_WATER",
    "MAX_CONTROL_BODY",
    "STREAMS",
    "TOXIC_TYPES",
    "DirectionStats",
    "DuplicateToxicError",
    "FaultProxy",
    "InvalidToxicError",
    "NetfaultError",
    "ProxyStats",
    "Toxic",
    "ToxicNotFoundError",
    "main",
    "parse_address",
    "parse_toxic_spec",
]
