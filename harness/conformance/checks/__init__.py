"""The conformance checks: one small async function per assertion, in a registry.

``registry`` holds ``CHECKS`` and ``@check``; ``context`` the ``Context`` every check
receives; ``assertions`` the helpers checks share. The other modules are the groups of
checks, which register themselves on import: the import order below is the run order.
"""

# isort: off
from harness.conformance.checks import models as models
from harness.conformance.checks import chat_nonstream as chat_nonstream
from harness.conformance.checks import chat_stream as chat_stream
from harness.conformance.checks import determinism as determinism
from harness.conformance.checks import completions as completions
from harness.conformance.checks import errors as errors
from harness.conformance.checks import robustness as robustness
from harness.conformance.checks import responses as responses
from harness.conformance.checks import messages as messages
from harness.conformance.checks import native as native
from harness.conformance.checks import ollama as ollama
from harness.conformance.checks import ollama_streams as ollama_streams

# isort: on
from harness.conformance.checks.assertions import (
    brief,
    expect_error,
    fail,
    require_json,
    require_sse,
)
from harness.conformance.checks.context import Context, normalise_base
from harness.conformance.checks.registry import (
    CHECKS,
    FAIL,
    NA,
    PASS,
    Check,
    CheckFailed,
    NotApplicable,
    check,
    select_checks,
)

__all__ = [
    "CHECKS",
    "FAIL",
    "NA",
    "PASS",
    "Check",
    "CheckFailed",
    "Context",
    "NotApplicable",
    "brief",
    "check",
    "expect_error",
    "fail",
    "normalise_base",
    "require_json",
    "require_sse",
    "select_checks",
]
