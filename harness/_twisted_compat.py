"""Every use of a Twisted private name in ``harness``, each pinned by a test.

Twisted offers no public way to ask these two questions synchronously, so the
answers read private attributes. Keeping them here means a Twisted upgrade that
renames one breaks ``tests/harness/test_twisted_compat.py``, not a fault test far
away; nothing else in ``harness`` may touch a Twisted ``_name``.
"""

from __future__ import annotations

from twisted.web.http import Request

__all__ = ["request_disconnected", "unsent_bytes"]


def request_disconnected(request: Request) -> bool:
    """Whether the client's connection was lost before (or after) ``request`` finished.

    ``Request._disconnected`` turns True in ``connectionLost`` and never back; unlike
    ``notifyFinish()`` it answers now, which a writer needs before every write.
    """
    return bool(request._disconnected)


def unsent_bytes(transport: object) -> int:
    """Bytes ``transport.write()`` accepted that Twisted has not handed to the kernel yet.

    For a ``twisted.internet.abstract.FileDescriptor`` (TCP) these are the bytes
    buffered in ``_tempDataBuffer`` (counted by ``_tempDataLen``) plus the part of
    ``dataBuffer`` after ``offset``. Another transport reports what it has of these.
    """
    pending = int(getattr(transport, "_tempDataLen", 0))
    buffered = getattr(transport, "dataBuffer", b"")
    return pending + len(buffered) - int(getattr(transport, "offset", 0))
