"""Which request faults apply: the ``/_fault`` route and the per-request choice.

For each generation request the first source that exists wins: the ``X-Fault``
header, the live set (``POST /_fault``), then the request keys of ``--fault``;
the set is then kept with probability ``p``, drawn from the request's own RNG.
"""

from __future__ import annotations

import json
import random

from twisted.web.server import Request

from harness.fake_llama._http import error_body, json_response
from harness.fake_llama._server_view import ServerView
from harness.fake_llama.faults import REQUEST_KEYS, Faults, FaultSpecError, parse_faults
from harness.fake_llama.generate import RequestError

__all__ = ["fault_control", "new_request_rng", "request_faults"]


def fault_control(server: ServerView, request: Request) -> bytes:
    """``GET`` shows, ``POST`` replaces (SPEC text or ``{"spec": ...}``), ``DELETE`` clears."""
    if request.method == b"POST":
        text = _posted_spec(request)
        try:
            server.set_live_faults(text)
        except FaultSpecError as e:
            raise RequestError(400, str(e), "invalid_request_error") from None
        server.log(f"srv  fault: live request faults set to {text!r}")
    elif request.method == b"DELETE":
        server.clear_live_faults()
        server.log("srv  fault: live request faults cleared")
    elif request.method != b"GET":
        return json_response(request, 404, error_body(404, "File Not Found"))
    return json_response(request, 200, server.fault_state())


def _posted_spec(request: Request) -> str:
    raw = request.content.read() if request.content is not None else b""
    text = raw.decode("utf-8", "replace").strip()
    if not text.startswith("{"):
        return text
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise RequestError(400, f"invalid JSON: {e}", "invalid_request_error") from None
    spec = obj.get("spec", "") if isinstance(obj, dict) else None
    if not isinstance(spec, str):
        raise RequestError(400, "'spec' must be a string", "invalid_request_error")
    return spec


def request_faults(server: ServerView, request: Request, rng: random.Random) -> Faults:
    """The faults for one request: X-Fault header > live set > --fault defaults,
    then kept with probability ``p`` (one draw from the request's RNG)."""
    header = request.getHeader(b"x-fault")
    if header is not None:
        try:
            faults = parse_faults(header.decode("utf-8", "replace"), allowed=REQUEST_KEYS)
        except FaultSpecError as e:
            msg = f"invalid X-Fault header: {e}"
            raise RequestError(400, msg, "invalid_request_error") from None
    elif server.live_faults is not None:
        faults = server.live_faults
    else:
        faults = server.request_defaults
    draw = rng.random()
    if faults.empty or draw >= faults.p:
        return Faults()
    if faults.keys - {"p"}:
        server.debug(f"srv  fault: request gets faults {faults.to_spec()!r}")
    return faults


def new_request_rng(server: ServerView) -> random.Random:
    """The next request's RNG: seeded by ``--seed`` and the request number, not by timing."""
    server.request_counter += 1
    return random.Random(f"{server.config.seed}:{server.request_counter}")
