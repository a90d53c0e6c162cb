"""``BaseJob``: the life of one asynchronous response, whatever it carries.

A route that answers later (completions, embeddings) starts a job: a coroutine
that owns the request until it finishes, the client leaves (a cancel, counted
and logged like llama-server's ``stop: cancel task``) or the server stops. The
concrete jobs are in ``completion.py``, ``plain.py``, ``stream.py`` and
``embedding.py``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.server import Request

from harness._twisted_compat import request_disconnected, unsent_bytes
from harness.fake_llama._http import dumps, error_body, start_json
from harness.fake_llama._server_view import ServerView
from harness.fake_llama._transport import close_transport, kernel_unsent
from harness.fake_llama.faults import Faults

__all__ = ["BaseJob", "Terminated"]


class Terminated(Exception):
    """The response was ended by an injected fault."""


class BaseJob:
    """Common life of an asynchronous response: start, client loss, abort, cleanup."""

    def __init__(self, server: ServerView, request: Request, faults: Faults) -> None:
        self.server = server
        self.reactor = server.reactor
        self.request = request
        self.faults = faults
        self.d: Deferred[None] | None = None
        self.done = False
        self.fake_closed = False  # the fake (fault / stop) ended the connection
        self.slot: int | None = None
        self.task_id = -1
        # Kept here: Request forgets its channel once finished, and close_after needs
        # the TCP transport after finishing the HTTP response.
        self._transport: Any = request.channel.transport if request.channel else None

    def start(self) -> None:
        """Run the job; it registers with the server until it ends."""
        self.server.jobs.add(self)
        self.request.notifyFinish().addErrback(self._client_gone)
        self.d = Deferred.fromCoroutine(self._main())

    async def _main(self) -> None:
        try:
            await self.run()
        except (CancelledError, Terminated):
            pass
        except Exception as e:  # a bug in the fake must not leave the client hanging
            self.server.log(f"srv  fake: job failed: {e!r}")
            if self.alive() and not self.request.startedWriting:
                self.send_error_now(500, error_body(500, str(e), "server_error"))
            elif self.alive():
                self.close(abort=True)
        finally:
            self._cleanup()

    async def run(self) -> None:
        """The response itself (subclasses)."""
        raise NotImplementedError

    @property
    def slot_id(self) -> int:
        """The slot as llama-server reports it: -1 before one is assigned."""
        return self.slot if self.slot is not None else -1

    def _client_gone(self, failure: Failure) -> None:
        if self.done or self.fake_closed:
            return
        if not self.server.stopping:
            self.server.stats.cancelled += 1
            self.server.log(
                f"srv  cancel_tasks: id {self.slot_id:2d} | task {self.task_id} | stop: cancel task"
            )
        if self.d is not None:
            self.d.cancel()

    def abort(self) -> None:
        """The server is stopping or crashing: end without counting a cancel."""
        self.fake_closed = True
        if self.d is not None:
            self.d.cancel()

    def _cleanup(self) -> None:
        self.done = True
        if self.slot is not None:
            self.server.slots.release(self.slot)
            self.slot = None
        self.server.jobs.discard(self)

    def alive(self) -> bool:
        """The client is still there and the response is not finished."""
        return not request_disconnected(self.request) and not self.request.finished

    async def sleep(self, seconds: float) -> None:
        """Wait on the server's reactor (never a negative delay)."""
        await deferLater(self.reactor, max(0.0, seconds))

    async def forever(self) -> None:
        """Wait until cancelled (client gone, server stopped)."""
        await Deferred()

    @property
    def transport(self) -> Any:
        """The TCP transport, still known after the HTTP response finished."""
        return self._transport

    async def flush(self, *, kernel: bool = False, timeout: float = 1.0) -> None:
        """Wait until written bytes left Twisted's buffer (and the kernel's, if asked)."""
        deadline = self.reactor.seconds() + timeout
        while self.alive() and self.reactor.seconds() < deadline:
            t = self.transport
            if t is None:
                return
            if unsent_bytes(t) <= 0 and (not kernel or kernel_unsent(t) <= 0):
                return
            await self.sleep(0.001)

    def close(self, *, abort: bool) -> None:
        """End the connection as a fault: FIN, or RST with ``abort``."""
        self.fake_closed = True
        if self.transport is not None:
            close_transport(self.transport, abort=abort)

    def send_error_now(self, status: int, obj: Any) -> None:
        """Answer with a JSON error and finish."""
        data = dumps(obj).encode("utf-8")
        start_json(self.request, status, data)
        self.request.write(data)
        self.request.finish()

    async def before_headers(self) -> None:
        """``status`` / ``hang``: the faults that act before any byte of the answer."""
        f = self.faults
        if f.status is not None:
            self.server.stats.faulted += 1
            self.send_error_now(f.status, error_body(f.status))
            raise Terminated
        if f.hang:
            self.server.debug("srv  fault: hang")
            await self.forever()
