"""``PlainCompletionJob``: a non-stream completion, one JSON body after the whole run.

Request faults still apply: the answer waits ``ttft`` plus the token gaps, and a
terminal fault whose count is at most the number of tokens cuts the answer after
that many token times (no body, a reset, a crash, or a 500).
"""

from __future__ import annotations

from harness.fake_llama._http import dumps, error_body, start_json
from harness.fake_llama._transport import split_point
from harness.fake_llama.completion import CompletionJob
from harness.fake_llama.jobs import Terminated

__all__ = ["PlainCompletionJob"]


class PlainCompletionJob(CompletionJob):
    """``stream`` false: generate at the faults' pace, then answer once."""

    async def deliver(self) -> None:
        tokens = self.gen.tokens
        await self.sleep(self.faults.ttft)
        self.meter.first_token()
        cut = self.faults.terminal_counts()
        for i in range(min([len(tokens), *cut])):
            if i:
                await self.sleep(self.token_gap())
            self.meter.n_sent = i + 1
        if cut and min(cut) <= len(tokens):
            await self.plain_fault()
        self.meter.n_sent = len(tokens)
        await self._answer()
        self.server.stats.completed += 1

    async def _answer(self) -> None:
        data = dumps(self.payloads.full_response(self.slot_id)).encode("utf-8")
        if self.faults.malformed_after is not None:
            data = data[: max(1, len(data) // 2)]
        req = self.request
        start_json(req, 200, data)
        if self.faults.split_utf8:
            at = split_point(data)
            req.write(data[:at])
            await self.flush()
            req.write(data[at:])
        else:
            req.write(data)
        req.finish()

    async def plain_fault(self) -> None:
        """A terminal fault hit a non-stream response: no body, or an error status."""
        f = self.faults
        self.server.stats.faulted += 1
        if f.error_after is not None or f.legacy_error_after is not None:
            self.send_error_now(500, error_body(500, "fault injected by fake-llama-server"))
            raise Terminated
        if f.stall_after is not None:
            await self.forever()
        if f.crash_after is not None:
            self.server.crash()
            raise Terminated
        self.close(abort=f.reset_after is not None)
        raise Terminated
