"""A lease: released once, carries the template's verdict, tells when its server is gone."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from server_core.interfaces import ILease
from server_core.shared_context import Lease
from server_core.shared_context._slot import Slot
from server_core.template_check import CHECKED_OK, TemplateVerdict
from tests.unit.shared_context.helpers import StubProcess, alias


def ready_slot(verdict: TemplateVerdict | None = None) -> Slot:
    process = StubProcess(alias("a"), lambda *_: None, Clock())
    process.base_url = "http://127.0.0.1:20001"
    slot = Slot(alias("a"), process, last_used=0.0)
    slot.started(probe=verdict is not None)
    if verdict is not None:
        slot.probed(verdict)
    return slot


def test_a_lease_names_its_server_and_is_released_once() -> None:
    released: list[Slot] = []
    slot = ready_slot()
    lease = Lease(slot, released.append)
    assert verifyObject(ILease, lease)
    assert (lease.alias, lease.base_url) == ("a", "http://127.0.0.1:20001")
    lease.release()
    lease.release()
    assert released == [slot]


@pytest.mark.parametrize(
    ("verdict", "error"),
    [
        (None, None),
        (CHECKED_OK, None),
        (TemplateVerdict(None, "could not be checked"), None),
        (TemplateVerdict(False, "drops the messages"), "drops the messages"),
    ],
)
def test_only_a_dropping_template_is_an_error(
    verdict: TemplateVerdict | None, error: str | None
) -> None:
    assert Lease(ready_slot(verdict), lambda s: None).chat_template_error == error


def test_when_lost_fires_once_the_server_is_gone() -> None:
    slot = ready_slot()
    lease = Lease(slot, lambda s: None)
    first, second = lease.when_lost(), lease.when_lost()
    assert first is not second and not first.called
    slot.lost("died")
    assert first.called and second.called
    assert lease.when_lost().called
