"""Conformance suite for OpenAI-compatible servers (chat, completions, Responses, Anthropic
Messages, llama.cpp's native routes) and their streaming; ``run_differential`` compares two.

```python
report = await run_conformance("http://127.0.0.1:1135", "my-model")
assert report.ok, report.format_table()
```

The CLI is ``harness conformance``; the pytest plugin is
``harness.conformance.pytest_plugin``. See docs/conformance.md.
"""

from harness.conformance.checks import CHECKS, FAIL, NA, PASS, Check, select_checks
from harness.conformance.differential import (
    CheckDiff,
    DiffReport,
    read_allow_file,
    run_differential,
    run_differential_checks,
)
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
    "CheckDiff",
    "CheckResult",
    "DiffReport",
    "Report",
    "TargetUnreachable",
    "read_allow_file",
    "run_checks",
    "run_conformance",
    "run_differential",
    "run_differential_checks",
    "select_checks",
]
