"""Socket-level helpers the faults need: kernel send queue, RST, split points.

A fault such as ``reset_after=N`` must send exactly N events before the RST, so
the job waits until Twisted's buffer *and* the kernel's send queue are empty;
these helpers answer those questions for a TCP transport.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from typing import Any

__all__ = ["close_transport", "kernel_unsent", "split_point"]


def kernel_unsent(transport: Any) -> int:
    """Bytes in the kernel send queue (Linux SIOCOUTQ); 0 if unknown."""
    try:
        fd = transport.getHandle().fileno()
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0])
    except Exception:
        return 0


def close_transport(transport: Any, *, abort: bool) -> None:
    """Close with FIN, or (``abort``) reset with RST: ``SO_LINGER`` 0, then abort."""
    if not abort:
        transport.loseConnection()
        return
    try:
        transport.getHandle().setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
    except Exception:  # noqa: S110 - RST is best effort on exotic transports
        pass
    transport.abortConnection()


def split_point(frame: bytes) -> int:
    """Inside the first multi-byte UTF-8 character, else the middle."""
    for i, b in enumerate(frame):
        if b >= 0xC0:
            return i + 1
    return max(1, len(frame) // 2)
