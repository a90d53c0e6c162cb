"""Conformance suite for OpenAI-compatible chat/completions servers and their streaming.

```python
report = await run_conformance("http://127.0.0.1:1135", "my-model")
assert report.ok, report.format_table()
```

The CLI is ``harness conformance``; the pytest plugin is
``harness.conformance.pytest_plugin``. See docs/conformance.md.
"""

from harness.conformance.checks import CHECKS, FAIL, NA, PASS, Check, select_checks
from harness.conformance.runner import (
    CheckResult,
    Report,
    TargetUnreachable,
    run_checks,
    run_conformance,
)

__all__ = [
    "CHECKS",
    "FAIL",
    "NA",
    "PASS",
    "Check",
    "CheckResult",
    "Report",
    "TargetUnreachable",
    "run_checks",
    "run_conformance",
    "select_checks",
]
