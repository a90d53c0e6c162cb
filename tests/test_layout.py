"""The layout rules hold: small modules and functions, one-way imports, Twisted privates fenced.

These read the source (no imports run), so a new module that breaks a rule fails here
with its name, not in a review.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("server_core", "harness")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# Declarative tables may be longer than a module of logic (the rule's own exception).
TABLES = {"harness/fake_llama/templates.py"}
COMPAT = {"server_core/_twisted_compat.py", "harness/_twisted_compat.py"}
# Twisted attributes and modules that are private; only the compat modules touch them.
TWISTED_PRIVATE = re.compile(
    r"\._(?:newclient|HTTP11ClientFactory|putConnection|aborting|producer|disconnected"
    r"|GenericHTTPChannelProtocol|exitSignal|raiseSynchronously|waitingForPort"
    r"|tempDataLen|factory)\b|twisted\.[\w.]*\._\w"
)


def modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield str(path.relative_to(ROOT)), path


def imports_of(path: Path) -> set[str]:
    """Modules imported at run time (imports only for type checkers do not count)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # ``from package import submodule`` imports that submodule too.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def module_name(rel: str) -> str:
    name = rel[:-3].replace("/", ".")
    return name.removesuffix(".__init__")


@pytest.mark.parametrize(("rel", "path"), list(modules()), ids=lambda v: str(v))
def test_module_and_function_sizes(rel: str, path: Path) -> None:
    text = path.read_text()
    if rel not in TABLES:
        assert text.count("\n") <= MAX_MODULE_LINES, f"{rel} is over {MAX_MODULE_LINES} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{rel}:{node.lineno} {node.name}: {length}"


def test_twisted_private_names_only_in_the_compat_modules() -> None:
    offenders = []
    for rel, path in modules():
        if rel in COMPAT:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if TWISTED_PRIVATE.search(code) and "self._factory" not in code:
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert offenders == []


def test_harness_imports_only_the_sse_codec_of_server_core() -> None:
    twisted_based = {"SseResponse", "DirectSse", "DirectEvent", "ForwardedSse", "writer",
                     "direct", "forwarded"}  # fmt: skip
    for rel, path in modules():
        if not rel.startswith("harness/"):
            continue
        for used in (m for m in imports_of(path) if m.split(".")[0] == "server_core"):
            parts = used.split(".")
            assert parts[:2] == ["server_core", "sse"], f"{rel} imports {used}"
            assert not set(parts[2:]) & twisted_based, f"{rel} imports {used}"


def test_no_import_cycles_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    names = {module_name(rel) for rel, _ in modules()}
    for rel, path in modules():
        graph[module_name(rel)] = {m for m in imports_of(path) if m in names}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            # A package importing its own submodules (re-exports) is not a cycle, nor is
            # a ``__main__`` block importing its own module by name.
            if target == node or target.startswith(node + "."):
                continue
            if state.get(target) == 1:
                cycle = [*trail[trail.index(target) :], target] if target in trail else [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if state.get(target) is None:
                visit(target, [*trail, target])
        state[node] = 2

    for name in sorted(graph):
        if state.get(name) is None:
            visit(name, [name])


def test_web_never_reads_upstream_bodies_nor_touches_processes() -> None:
    body_readers = {
        "server_core.upstream.read_complete_body",
        "server_core.upstream.body",
        "server_core.upstream.BodyIncomplete",
        "server_core.sse.ForwardedSse",
    }
    for rel, path in modules():
        if rel.startswith("server_core/web/"):
            used = imports_of(path)
            assert not used & body_readers, rel
            assert not any(m.startswith("server_core.process") for m in used), rel
