"""A burst of new connections fits in the listener's backlog: no client waits for a SYN
retransmit (a second) while the server is busy.

The burst arrives while the reactor is not accepting (this test holds it, as a busy
server's work does): every handshake the kernel completes waits in the accept queue, and
with Twisted's default backlog of 50 the rest were dropped until their SYN retransmit.
"""

from __future__ import annotations

import select
import socket

import pytest
import pytest_twisted

from tests.integration.stack import stack

pytestmark = pytest.mark.timeout(30)

BURST = 300


def connected_within(port: int, seconds: float) -> int:
    """Open ``BURST`` connections at once; how many completed within ``seconds``."""
    socks = []
    try:
        for _ in range(BURST):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
        pending = set(socks)
        done = 0
        deadline_left = seconds
        while pending and deadline_left > 0:
            _, writable, _ = select.select([], list(pending), [], min(0.05, deadline_left))
            deadline_left -= 0.05
            for s in writable:
                pending.discard(s)
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    done += 1
        return done
    finally:
        for s in socks:
            s.close()


@pytest_twisted.ensureDeferred
async def test_a_burst_of_300_connections_is_queued_not_dropped() -> None:
    async with stack() as s:
        # The reactor is held here: nothing accepts while the burst arrives.
        assert connected_within(s.port, 0.5) == BURST
