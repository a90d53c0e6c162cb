"""pytest plugin: one test item per conformance check against a running server.

Registered through the ``pytest11`` entry point ``harness_conformance`` when the
project is installed (elsewhere: ``-p harness.conformance.pytest_plugin``). Inert
unless ``--conformance-target`` is given::

    pytest --conformance-target http://127.0.0.1:1135 --conformance-model my-model

adds the items ``conformance::<check name>`` (select with ``-k``): a passing check
passes, a failing one fails with its detail, an n/a one is skipped with its reason.
The fixture ``conformance_report`` runs the selected checks once and returns the
``Report``. With ``--conformance-reference URL`` (differential mode) each item runs its
check against both servers instead and fails only when the results differ and the check
is not in ``--conformance-allow-diff``. Requests run on the Twisted reactor through
pytest-twisted.

Heavy imports happen inside the hooks: every pytest run of a project that has this
package installed loads this module, and nothing here may install a reactor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from harness.conformance.checks import Check, Context
    from harness.conformance.runner import CheckResult, Report

__all__ = ["ConformanceDifference", "ConformanceFailure", "ConformanceItem", "ConformanceSuite"]

_NODE = "conformance"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "OpenAI-compatible server conformance (harness)")
    group.addoption(
        "--conformance-target",
        metavar="URL",
        default=None,
        help="run the conformance checks against this base URL (adds one item per check)",
    )
    group.addoption("--conformance-model", metavar="MODEL", default=None, help="model id")
    group.addoption(
        "--conformance-api-key", metavar="KEY", default=None, help="API key (enables auth.*)"
    )
    group.addoption(
        "--conformance-timeout",
        metavar="S",
        type=float,
        default=30.0,
        help="seconds per request (default 30)",
    )
    group.addoption(
        "--conformance-only",
        metavar="NAME,...",
        default=None,
        help="only these checks (names or group prefixes)",
    )
    group.addoption(
        "--conformance-reference",
        metavar="URL",
        default=None,
        help="differential mode: each item fails when this server's result differs",
    )
    group.addoption(
        "--conformance-reference-model",
        metavar="MODEL",
        default=None,
        help="model id at the reference (default: --conformance-model)",
    )
    group.addoption(
        "--conformance-allow-diff",
        metavar="NAME,...",
        default=None,
        help="checks (names or group prefixes) allowed to differ from the reference",
    )
    group.addoption(
        "--conformance-lenient",
        action="store_true",
        default=False,
        help="accept any 4xx for invalid requests and non-JSON 404/405 bodies",
    )


def _names(value: str | None) -> list[str] | None:
    return [n.strip() for n in value.split(",") if n.strip()] if value else None


def _options(config: pytest.Config) -> dict[str, Any]:
    only = config.getoption("conformance_only")
    return {
        "reference": config.getoption("conformance_reference"),
        "reference_model": config.getoption("conformance_reference_model"),
        "allow": _names(config.getoption("conformance_allow_diff")) or [],
        "target": config.getoption("conformance_target"),
        "model": config.getoption("conformance_model"),
        "api_key": config.getoption("conformance_api_key"),
        "timeout": config.getoption("conformance_timeout"),
        "only": [n.strip() for n in only.split(",") if n.strip()] if only else None,
        "lenient": config.getoption("conformance_lenient"),
    }


def _selected(config: pytest.Config) -> list[Check]:
    from harness.conformance.checks import select_checks

    opts = _options(config)
    if not opts["model"]:
        raise pytest.UsageError("--conformance-target needs --conformance-model")
    if not config.pluginmanager.hasplugin("twisted"):
        raise pytest.UsageError("the conformance plugin needs pytest-twisted (-p twisted)")
    try:
        checks = select_checks(opts["only"])
    except ValueError as exc:
        raise pytest.UsageError(f"--conformance-only: {exc}") from None
    try:
        _allowed(config)
    except ValueError as exc:
        raise pytest.UsageError(f"--conformance-allow-diff: {exc}") from None
    return checks


def _allowed(config: pytest.Config) -> frozenset[str]:
    from harness.conformance.differential import expand_allow

    allow: frozenset[str] = expand_allow(_options(config)["allow"])
    return allow


class ConformanceFailure(Exception):
    """A check failed; carries its result for the failure report."""

    def __init__(self, result: CheckResult) -> None:
        super().__init__(result.detail)
        self.result = result


class ConformanceDifference(Exception):
    """A check's result differs between target and reference (differential mode)."""

    def __init__(self, target: CheckResult, reference: CheckResult) -> None:
        super().__init__(f"{target.result} vs {reference.result}")
        self.target = target
        self.reference = reference


class ConformanceSuite(pytest.Collector):
    """The parent node of the check items (node id ``conformance``)."""

    def __init__(self, *, checks: list[Check], **kw: Any) -> None:
        super().__init__(**kw)
        self.checks = checks

    def collect(self) -> list[pytest.Item]:
        return [ConformanceItem.from_parent(self, name=c.name, check=c) for c in self.checks]


class ConformanceItem(pytest.Item):
    """One conformance check as a test."""

    def __init__(self, *, check: Check, **kw: Any) -> None:
        super().__init__(**kw)
        self.check = check

    def runtest(self) -> None:
        from harness.conformance.checks import FAIL, NA

        result = _run_check(self.config, self.check)
        if _options(self.config)["reference"]:
            reference = _run_check(self.config, self.check, reference=True)
            if result.result != reference.result and self.name not in _allowed(self.config):
                raise ConformanceDifference(result, reference)
            return
        if result.result == NA:
            # Reported at the item, not at this line of the plugin.
            raise pytest.skip.Exception(
                f"{self.name} n/a: {result.detail}", _use_item_location=True
            )
        if result.result == FAIL:
            raise ConformanceFailure(result)

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:
        if isinstance(excinfo.value, ConformanceFailure):
            r = excinfo.value.result
            return f"{r.name} failed: {r.detail}\n  (asserts: {r.description})"
        if isinstance(excinfo.value, ConformanceDifference):
            t, ref = excinfo.value.target, excinfo.value.reference
            return (
                f"{t.name} differs from the reference:\n"
                f"  target     {t.result}: {t.detail}\n  reference  {ref.result}: {ref.detail}"
            )
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        # Point at the check's source: skips (n/a) and failures are located there.
        code = self.check.func.__code__
        return code.co_filename, code.co_firstlineno - 1, f"{_NODE}::{self.name}"


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselection sees the items
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    if not config.getoption("conformance_target"):
        return
    suite = ConformanceSuite.from_parent(
        session, name=_NODE, nodeid=_NODE, checks=_selected(config)
    )
    items.extend(suite.collect())


# -- running on the reactor ------------------------------------------------------------------

_CONTEXT_KEYS = {False: pytest.StashKey[Any](), True: pytest.StashKey[Any]()}


def _blockon(coro: Any) -> Any:
    import pytest_twisted
    from twisted.internet.defer import ensureDeferred

    return pytest_twisted.blockon(ensureDeferred(coro))


def _context(config: pytest.Config, reference: bool = False) -> Context:
    """The run's shared Context (the target's, or the reference's), probed once;
    re-raises an unreachable server each time."""
    from harness.conformance.checks import Context
    from harness.conformance.runner import probe

    cached = config.stash.get(_CONTEXT_KEYS[reference], None)
    if cached is None:
        opts = _options(config)
        ctx = Context(
            opts["reference"] if reference else opts["target"],
            (opts["reference_model"] if reference else None) or opts["model"],
            api_key=None if reference else opts["api_key"],
            timeout=opts["timeout"],
            lenient=opts["lenient"],
        )
        try:
            _blockon(probe(ctx))
            cached = ctx
        except Exception as exc:
            cached = exc
        config.stash[_CONTEXT_KEYS[reference]] = cached
    if isinstance(cached, Exception):
        raise cached
    ctx_: Context = cached
    return ctx_


def _run_check(config: pytest.Config, check: Check, *, reference: bool = False) -> CheckResult:
    import time

    from harness.conformance.runner import run_one

    ctx = _context(config, reference)
    result: CheckResult = _blockon(run_one(ctx, check, time.monotonic))
    return result


@pytest.fixture(scope="session")
def conformance_report(request: pytest.FixtureRequest) -> Report:
    """The ``Report`` of the selected checks against ``--conformance-target``."""
    from harness.conformance.runner import run_checks

    config = request.config
    opts = _options(config)
    if not opts["target"]:
        pytest.fail("the conformance_report fixture needs --conformance-target/--model")
    _selected(config)
    report: Report = _blockon(
        run_checks(
            opts["target"],
            opts["model"],
            api_key=opts["api_key"],
            timeout=opts["timeout"],
            only=opts["only"],
            lenient=opts["lenient"],
        )
    )
    return report
