"""pytest plugin: one test item per conformance check against a running server.

Registered through the ``pytest11`` entry point ``harness_conformance`` when the
project is installed (elsewhere: ``-p harness.conformance.pytest_plugin``). Inert
unless ``--conformance-target`` is given::

    pytest --conformance-target http://127.0.0.1:1135 --conformance-model my-model

adds the items ``conformance::<check name>`` (select with ``-k``): a passing check
passes, a failing one fails with its detail, an n/a one is skipped with its reason.
The fixture ``conformance_report`` runs the selected checks once and returns the
``Report``. Requests run on the Twisted reactor through pytest-twisted.

Heavy imports happen inside the hooks: every pytest run of a project that has this
package installed loads this module, and nothing here may install a reactor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from harness.conformance.checks import Check, Context
    from harness.conformance.runner import CheckResult, Report

__all__ = ["ConformanceFailure", "ConformanceItem", "ConformanceSuite"]

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
        "--conformance-lenient",
        action="store_true",
        default=False,
        help="accept any 4xx for invalid requests and non-JSON 404/405 bodies",
    )


def _options(config: pytest.Config) -> dict[str, Any]:
    only = config.getoption("conformance_only")
    return {
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
        return select_checks(opts["only"])
    except ValueError as exc:
        raise pytest.UsageError(f"--conformance-only: {exc}") from None


class ConformanceFailure(Exception):
    """A check failed; carries its result for the failure report."""

    def __init__(self, result: CheckResult) -> None:
        super().__init__(result.detail)
        self.result = result


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

_CONTEXT_KEY = pytest.StashKey[Any]()


def _blockon(coro: Any) -> Any:
    import pytest_twisted
    from twisted.internet.defer import ensureDeferred

    return pytest_twisted.blockon(ensureDeferred(coro))


def _context(config: pytest.Config) -> Context:
    """The run's shared Context, probed once; re-raises an unreachable target each time."""
    from harness.conformance.checks import Context
    from harness.conformance.runner import probe

    cached = config.stash.get(_CONTEXT_KEY, None)
    if cached is None:
        opts = _options(config)
        ctx = Context(
            opts["target"],
            opts["model"],
            api_key=opts["api_key"],
            timeout=opts["timeout"],
            lenient=opts["lenient"],
        )
        try:
            _blockon(probe(ctx))
            cached = ctx
        except Exception as exc:
            cached = exc
        config.stash[_CONTEXT_KEY] = cached
    if isinstance(cached, Exception):
        raise cached
    ctx_: Context = cached
    return ctx_


def _run_check(config: pytest.Config, check: Check) -> CheckResult:
    import time

    from harness.conformance.runner import run_one

    result: CheckResult = _blockon(run_one(_context(config), check, time.monotonic))
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
