"""``StreamCompletionJob``: a completion as an SSE stream, with pings and event faults.

Headers go out as soon as the request has a slot (llama-server's ``is_begin``),
then one ``data:`` event per write. The event-numbered faults (``X_after=N``) are
applied right after event N was written; see the counting rule in
docs/fake-llama-server.md.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IDelayedCall

from harness.fake_llama._http import dumps, error_body
from harness.fake_llama._transport import split_point
from harness.fake_llama.completion import CompletionJob
from harness.fake_llama.jobs import Terminated
from harness.fake_llama.payloads import SseEvent
from server_core.sse import encode_comment, encode_event

__all__ = ["StreamCompletionJob"]


class StreamCompletionJob(CompletionJob):
    """``stream`` true: the API's opening events, one per token, its final events.

    What the events contain is the API's ``StreamPayloads`` (chat, text, native,
    Responses, Anthropic); this class only writes them and applies the faults, so
    every fault works the same way in every API.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.line_end = "\r\n" if self.faults.crlf else "\n"
        self.events = 0
        self._writing = False  # inside a split write: a ping must not land in the middle
        self._ping_call: IDelayedCall | None = None

    async def deliver(self) -> None:
        req = self.request
        req.setResponseCode(200)
        req.setHeader(b"Content-Type", b"text/event-stream")
        req.setHeader(b"X-Accel-Buffering", b"no")
        req.write(b"")  # headers go out as soon as the task starts (llama-server's is_begin)
        self._arm_ping()
        await self.terminal_faults(0)
        await self.sleep(self.faults.ttft)
        self.meter.first_token()
        payloads = self.payloads
        for i, token in enumerate(self.gen.tokens):
            if i:
                await self.sleep(self.token_gap())
            self.meter.n_sent = i + 1
            for event in payloads.token_events(i, token, self.slot_id):
                await self.emit(event)
        for event in payloads.final_events(self.slot_id):
            await self.emit(event)
        if payloads.done_marker is not None:
            await self.emit((None, payloads.done_marker))
        req.finish()
        self.server.stats.completed += 1
        self.server.debug(
            f"slot      release: id {self.slot_id:2d} | task {self.task_id} | stop processing: "
            f"n_tokens = {self.gen.n_prompt + self.meter.n_sent}"
        )

    # -- pings -----------------------------------------------------------------------

    def ping_interval(self) -> float:
        """Seconds of silence before a ``:`` ping: the ``ping`` fault, else the flag."""
        if self.faults.ping is not None:
            return self.faults.ping
        return self.server.config.sse_ping_interval

    def _arm_ping(self) -> None:
        if self._ping_call is not None and self._ping_call.active():
            self._ping_call.cancel()
        self._ping_call = None
        interval = self.ping_interval()
        if interval > 0 and self.alive() and not self.done:
            self._ping_call = self.reactor.callLater(interval, self._ping)

    def _ping(self) -> None:
        self._ping_call = None
        if self.done or not self.alive():
            return
        if not self._writing:
            self.request.write(encode_comment("", line_end=self.line_end))
        self._arm_ping()

    def _cleanup(self) -> None:
        if self._ping_call is not None and self._ping_call.active():
            self._ping_call.cancel()
        self._ping_call = None
        super()._cleanup()

    # -- events ----------------------------------------------------------------------

    def _encode(self, event: SseEvent) -> bytes:
        name, payload = event
        data = payload if isinstance(payload, str) else dumps(payload)
        return encode_event(data, event=name, line_end=self.line_end)

    async def _write_frame(self, frame: bytes) -> None:
        if not self.alive():
            raise CancelledError()
        if self.faults.split_utf8:
            self._writing = True
            try:
                at = split_point(frame)
                self.request.write(frame[:at])
                await self.flush()
                if not self.alive():
                    raise CancelledError()
                self.request.write(frame[at:])
            finally:
                self._writing = False
        else:
            self.request.write(frame)
        self._arm_ping()

    async def emit(self, event: SseEvent) -> None:
        """Write the next event, then apply the faults keyed on its number."""
        frame = self._encode(event)
        await self._write_frame(frame)
        self.events += 1
        n = self.events
        f = self.faults
        if f.duplicate_after == n:
            await self._write_frame(frame)
        if f.malformed_after == n:
            await self._write_frame(encode_event("{not json", line_end=self.line_end))
        await self.terminal_faults(n)

    async def terminal_faults(self, n: int) -> None:
        """The first terminal fault keyed on event ``n`` ends the stream (in the doc's order)."""
        f = self.faults
        if n not in f.terminal_counts():
            return
        self.server.stats.faulted += 1
        self.meter.account(self.server.stats)
        if f.error_after == n:
            err = error_body(500, f"fault injected by fake-llama-server (error_after={n})")
            await self._write_frame(self._encode(self.payloads.error_event(err["error"])))
            self.request.finish()
        elif f.legacy_error_after == n:
            await self._legacy_error(n)
            self.request.finish()
        elif f.stall_after == n:
            self.server.debug(f"srv  fault: stall after {n} events")
            await self.forever()
        else:
            await self._cut(n)
        raise Terminated

    async def _legacy_error(self, n: int) -> None:
        le = self.line_end
        err = error_body(500, f"fault injected by fake-llama-server (legacy_error_after={n})")
        await self._write_frame(f"error: {dumps(err)}{le}{le}".encode())
        if self.payloads.legacy_done is not None:
            await self._write_frame(self._encode((None, self.payloads.legacy_done)))

    async def _cut(self, n: int) -> None:
        """``close`` / ``drop`` / ``reset`` / ``crash`` after event ``n``."""
        f = self.faults
        if f.close_after == n:
            self.fake_closed = True
            self.request.finish()
            self.close(abort=False)
        elif f.drop_after == n:
            await self.flush()
            self.close(abort=False)
        elif f.reset_after == n:
            await self.flush(kernel=True)
            self.close(abort=True)
        elif f.crash_after == n:
            await self.flush(kernel=True)
            self.server.crash()
