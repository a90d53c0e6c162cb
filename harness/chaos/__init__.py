"""``harness chaos``: load + seeded random faults + invariant checks.

Runs N requests at concurrency C against server_core (``--spawn``: it starts fake
upstreams, netfault lanes and ``twistd -n server-core`` itself) or against any running
OpenAI-compatible server in front of a fake llama-server (``--target URL --model M``).
Every request gets a fault drawn from one ``random.Random(seed)`` and its end is judged:
an honest end or a violation. Each violation prints the command that replays exactly
that request: ``python -m harness.chaos ... --seed S --only-request I``. See
docs/chaos.md.

Where things are: ``kinds`` (the vocabulary), ``plan`` and ``draw`` (what each request
does, drawn from the seed), ``toxics`` (network faults), ``judge`` (is an end honest),
``collateral`` (failures another request explains), ``stack``, ``server_child``,
``procfs`` and ``waiting`` (spawn mode), ``checks`` (after the run), ``options``,
``runner``, ``report`` and ``command`` (the command line).
"""

from harness.chaos.collateral import attribute_collateral
from harness.chaos.command import add_arguments, main, run
from harness.chaos.draw import generate_plan, generate_plans
from harness.chaos.judge import VIOLATION_CODES, Violation, judge
from harness.chaos.kinds import KINDS
from harness.chaos.options import ChaosOptions
from harness.chaos.plan import PlanSettings, RequestPlan
from harness.chaos.records import Check, RequestRecord
from harness.chaos.report import ChaosReport
from harness.chaos.runner import run_chaos
from harness.chaos.stack import SpawnedStack, StackSettings

__all__ = [
    "KINDS",
    "VIOLATION_CODES",
    "ChaosOptions",
    "ChaosReport",
    "Check",
    "PlanSettings",
    "RequestPlan",
    "RequestRecord",
    "SpawnedStack",
    "StackSettings",
    "Violation",
    "add_arguments",
    "attribute_collateral",
    "generate_plan",
    "generate_plans",
    "judge",
    "main",
    "run",
    "run_chaos",
]
