"""Pins the Twisted private names ``harness._twisted_compat`` relies on, and their meaning."""

from __future__ import annotations

from twisted.internet.abstract import FileDescriptor
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request

from harness._twisted_compat import body_socket, request_disconnected, unsent_bytes


def _open_request() -> tuple[HTTPChannel, Request]:
    """A real HTTPChannel on an in-memory transport, holding one unfinished request."""
    seen: list[Request] = []

    class Held(Request):
        def process(self) -> None:
            seen.append(self)  # never finished: the response is still being written

    channel = HTTPChannel()
    channel.requestFactory = Held
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    [request] = seen
    return channel, request


def test_request_disconnected_turns_true_when_the_connection_is_lost() -> None:
    channel, request = _open_request()
    assert request_disconnected(request) is False
    request.write(b"partial")
    assert request_disconnected(request) is False
    channel.connectionLost(Failure(ConnectionDone()))
    assert request_disconnected(request) is True


def test_a_finished_request_is_not_disconnected() -> None:
    _, request = _open_request()
    request.finish()
    assert request.finished and request_disconnected(request) is False


class _Trickle(FileDescriptor):
    """A FileDescriptor whose "kernel" takes at most ``room`` bytes per doWrite."""

    def __init__(self, room: int) -> None:
        super().__init__(reactor=MemoryReactor())
        self.connected = 1
        self.room = room
        self.kernel = b""

    def writeSomeData(self, data: bytes) -> int:
        taken = bytes(data[: self.room])
        self.kernel += taken
        return len(taken)


def test_unsent_bytes_counts_what_write_accepted_and_the_kernel_has_not() -> None:
    fd = _Trickle(room=4)
    assert unsent_bytes(fd) == 0
    fd.write(b"hello ")
    fd.write(b"world")
    assert unsent_bytes(fd) == 11  # all still in Twisted's buffers
    fd.doWrite()
    assert fd.kernel == b"hell" and unsent_bytes(fd) == 7
    fd.doWrite()
    fd.doWrite()
    assert fd.kernel == b"hello world" and unsent_bytes(fd) == 0


def test_unsent_bytes_of_another_transport_is_zero() -> None:
    assert unsent_bytes(StringTransport()) == 0


def test_body_socket_is_the_transport_under_the_proxy_a_body_sees() -> None:
    from twisted.web._newclient import TransportProxyProducer

    tcp = StringTransport()
    proxy = TransportProxyProducer(tcp)
    assert body_socket(proxy) is tcp
    proxy.stopProxying()  # what Twisted does when the body is done: nothing to abort
    assert body_socket(proxy) is None
    assert body_socket(object()) is None
