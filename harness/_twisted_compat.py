"""Every use of a Twisted private name in ``harness``, each pinned by a test.

Twisted offers no public way to ask these questions synchronously (or to reach the
socket under a response body), so the answers read private attributes. Keeping them
here means a Twisted upgrade that renames one breaks
``tests/harness/test_twisted_compat.py``, not a fault test far away; nothing else in
``harness`` may touch a Twisted ``_name``.
"""

from __future__ import annotations

from twisted.web.http import Request

__all__ = ["body_socket", "request_disconnected", "unsent_bytes"]


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


def body_socket(transport: object) -> object | None:
    """The TCP transport under the ``TransportProxyProducer`` a response body sees, or None.

    A body protocol only gets that proxy, whose public ``loseConnection`` waits for the
    write buffer; aborting a response at once needs the real transport (its ``_producer``).
    """
    return getattr(transport, "_producer", None)
