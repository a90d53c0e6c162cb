"""One alias's server as the shared context sees it: an explicit lifecycle.

::

    starting --started--> probing --probed--> ready      (the template check, when set)
    starting --started (no probe)-----------> ready
    ready --drain (stop with leases held)--> draining
    starting | probing | ready | draining --stop--> stopping --stopped--> stopped
    starting --start failed--> failed
    any live phase --the server died--> lost

Only ``ready`` grants leases and only an idle ``ready`` slot is evicted. ``stopped``,
``failed`` and ``lost`` are terminal: the context forgets the slot as it enters one, and
whoever waits for the slot to be gone (a lease's ``when_lost``, ``stop()``) is told then.

Each phase is a small class carrying only its own data: the idle timer exists only in
``Ready``, the stop's reason only in ``Stopping``. The old slot's flags (``draining``,
``probing``, ``lost``, ``stopping``, ``idle_timer``...) allowed combinations that meant
nothing, such as a probing server with an idle timer or a lost one still draining; here
they cannot be written down, and a transition missing from ``_LEGAL`` raises.

Why not automat (25.4 is installed, and its ``TypeMachineBuilder`` has data-carrying
states; ``LlamaServerProcess`` uses it)? The scheduler asks every slot, on every pump,
"may I grant? may I evict? is it up?". Automat hides the current state, so each question
would be one more input implemented in every state (eight states, four questions), and an
automat input that returns a value raises when it is called re-entrantly, which the
scheduler does: a process whose ``stop`` completes at once pumps the queue, and so asks its
own slot a question, from inside that slot's transition. An explicit phase object answers
with ``isinstance``, tolerates re-entry, and keeps ``_pump`` reading as prose.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from server_core.aliases import LocalAlias
from server_core.interfaces import IServerProcess
from server_core.template_check import TemplateVerdict

__all__ = [
    "Draining",
    "Failed",
    "IllegalTransition",
    "Lost",
    "Phase",
    "Probing",
    "Ready",
    "Slot",
    "Starting",
    "Stopped",
    "Stopping",
]


@dataclass
class Starting:
    """The process is spawning and loading its model."""


@dataclass
class Probing:
    """The server answers, but its chat template is still being checked."""


@dataclass
class Ready:
    """Grants leases; with none held, an idle timer may run down the TTL."""

    idle_timer: IDelayedCall | None = None


@dataclass
class Draining:
    """Asked to stop while leased: no new leases, stops once the last one ends."""


@dataclass(frozen=True)
class Stopping:
    """The process is being stopped (for ``reason``)."""

    reason: str


@dataclass(frozen=True)
class Stopped:
    """Terminal: stopped on purpose."""

    reason: str


@dataclass(frozen=True)
class Failed:
    """Terminal: the start failed."""

    error: str


@dataclass(frozen=True)
class Lost:
    """Terminal: the server died while up (or while being stopped)."""

    error: str


Phase = Starting | Probing | Ready | Draining | Stopping | Stopped | Failed | Lost

_UP = (Probing, Ready, Draining)  # the server answers HTTP
_LIVE = (Starting, *_UP, Stopping)
_TERMINAL = (Stopped, Failed, Lost)

_LEGAL: dict[type, tuple[type, ...]] = {
    # new phase: the phases it may be entered from
    Probing: (Starting,),
    Ready: (Starting, Probing),
    Draining: (Ready,),
    Stopping: (Starting, Probing, Ready, Draining),
    Stopped: (Stopping,),
    Failed: (Starting,),
    Lost: _LIVE,
}


class IllegalTransition(RuntimeError):
    """The scheduler asked a slot for a move its lifecycle does not have (a bug)."""


@dataclass(eq=False)
class Slot:
    """One alias's process, its lifecycle phase and its lease bookkeeping."""

    alias: LocalAlias
    process: IServerProcess
    last_used: float
    leases: int = 0
    requests: int = 0
    template: TemplateVerdict | None = None
    ready_at: float | None = None  # when it first granted leases, for ``min_resident``
    phase: Phase = field(default_factory=Starting)
    _gone_waiters: list[defer.Deferred[None]] = field(default_factory=list, repr=False)

    # -- questions the scheduler asks -------------------------------------------------

    @property
    def name(self) -> str:
        return self.alias.name

    @property
    def starting(self) -> bool:
        return isinstance(self.phase, Starting)

    @property
    def grantable(self) -> bool:
        """May a new lease be granted now?"""
        return isinstance(self.phase, Ready)

    @property
    def evictable(self) -> bool:
        """Ready with no lease: a swap may stop it."""
        return isinstance(self.phase, Ready) and self.leases == 0

    @property
    def up(self) -> bool:
        """Does the server answer (probing, ready or draining)?"""
        return isinstance(self.phase, _UP)

    @property
    def draining(self) -> bool:
        return isinstance(self.phase, Draining)

    @property
    def stopping(self) -> bool:
        return isinstance(self.phase, Stopping)

    @property
    def gone(self) -> bool:
        """Stopped, failed or lost: the context has forgotten this slot."""
        return isinstance(self.phase, _TERMINAL)

    def when_gone(self) -> defer.Deferred[None]:
        """A fresh Deferred firing once the slot reaches a terminal phase."""
        d: defer.Deferred[None] = defer.Deferred()
        if self.gone:
            d.callback(None)
        else:
            self._gone_waiters.append(d)
        return d

    # -- transitions ------------------------------------------------------------------

    def started(self, *, probe: bool) -> None:
        """The process is ready: check its template first when a probe is set."""
        self._enter(Probing() if probe else Ready())

    def probed(self, verdict: TemplateVerdict) -> bool:
        """Record the template's verdict; True if that made the slot ready."""
        self.template = verdict
        if not isinstance(self.phase, Probing):
            return False  # stopped or lost while it was checked: nothing to grant
        self._enter(Ready())
        return True

    def drain(self) -> None:
        """Stop granting; the last release stops the process."""
        self._enter(Draining())

    def stop(self, reason: str) -> None:
        """The process is being stopped: no lease, no idle timer from now on."""
        self._enter(Stopping(reason))

    def stopped(self) -> None:
        """The stop requested by ``stop`` has completed."""
        if isinstance(self.phase, Stopping):
            self._enter(Stopped(self.phase.reason))

    def failed(self, error: str) -> None:
        self._enter(Failed(error))

    def lost(self, error: str) -> None:
        """The server died: its leases hear of it through ``when_gone``."""
        self._enter(Lost(error))

    # -- leases and the idle timer -----------------------------------------------------

    def granted(self, now: float) -> None:
        """Count a new lease; only a ready slot grants one."""
        if not self.grantable:
            raise IllegalTransition(f"{self.name}: a lease granted while {self._phase_name}")
        self.cancel_idle()
        self.leases += 1
        self.requests += 1
        self.last_used = now

    def released(self, now: float) -> None:
        self.leases -= 1
        self.last_used = now

    def arm_idle(self, clock: IReactorTime, ttl: float, expired: Callable[[], None]) -> None:
        """Run ``expired`` after ``ttl`` idle seconds (only a ready slot idles)."""
        self.cancel_idle()
        if isinstance(self.phase, Ready):
            self.phase.idle_timer = clock.callLater(ttl, self._idle_expired, expired)

    def cancel_idle(self) -> None:
        if isinstance(self.phase, Ready):
            timer, self.phase.idle_timer = self.phase.idle_timer, None
            if timer is not None and timer.active():
                timer.cancel()

    def _idle_expired(self, expired: Callable[[], None]) -> None:
        if isinstance(self.phase, Ready):
            self.phase.idle_timer = None
        expired()

    # -- the one place the phase changes -----------------------------------------------

    @property
    def _phase_name(self) -> str:
        return type(self.phase).__name__.lower()

    def _enter(self, new: Phase) -> None:
        if not isinstance(self.phase, _LEGAL[type(new)]):
            raise IllegalTransition(
                f"{self.name}: {self._phase_name} -> {type(new).__name__.lower()}"
            )
        self.cancel_idle()  # leaving ready (the timer lives only there)
        self.phase = new
        if self.gone:
            waiters, self._gone_waiters = self._gone_waiters, []
            for d in waiters:
                d.callback(None)
