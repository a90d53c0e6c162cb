#!/usr/bin/env python3
"""Mutation scores per module, from a finished ``mutmut run`` (``tox -e mutation``).

For every mutant ``mutmut results --all true`` lists, the score counts it as:

- **killed**: killed or timed out (a test failed, or the mutant hung one);
- **equivalent**: named in ``mutation-equivalents.txt`` (a glob per line, with why):
  mutants that cannot change behaviour, left out of the score;
- **message**: its only change is inside a string literal that holds a space, i.e. the
  text of a message or a log line (``"XXsent no dataXX"``), left out of the score as
  the issue asks (tests pin the messages clients parse, not every word of them);
- **survived**: anything else, counted against the module and listed.

Prints one line per module (``killed / (killed + survived)``) and the surviving mutants.
Usage: python scripts/mutation_scores.py [--equivalents FILE] [--quiet]
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import re
import subprocess
import sys
from pathlib import Path

_STRING = re.compile(r"""(?:'[^'\\]*(?:\\.[^'\\]*)*'|"[^"\\]*(?:\\.[^"\\]*)*")""")


def _results() -> list[tuple[str, str]]:
    out = subprocess.run(
        ["mutmut", "results", "--all", "true"], capture_output=True, text=True, check=True
    ).stdout
    rows = []
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name:
            rows.append((name, status))
    return rows


def _equivalents(path: Path) -> list[str]:
    if not path.exists():
        return []
    globs = []
    for line in path.read_text().splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            globs.append(entry)
    return globs


def _changed_lines(name: str) -> tuple[list[str], list[str]]:
    diff = subprocess.run(["mutmut", "show", name], capture_output=True, text=True).stdout
    removed = [
        line[1:]
        for line in diff.splitlines()
        if line.startswith("-") and not line.startswith("---")
    ]
    added = [
        line[1:]
        for line in diff.splitlines()
        if line.startswith("+") and not line.startswith("+++")
    ]
    return removed, added


def message_only(name: str) -> bool:
    """True when the mutant changes only string literals that hold a space."""
    removed, added = _changed_lines(name)
    if len(removed) != len(added) or not removed:
        return False
    for old, new in zip(removed, added, strict=True):
        old_strings, new_strings = _STRING.findall(old), _STRING.findall(new)
        if _STRING.sub('""', old) != _STRING.sub('""', new):
            return False  # code outside the strings changed
        changed = [a for a, b in zip(old_strings, new_strings, strict=False) if a != b]
        if not changed or not all(" " in s for s in changed):
            return False
    return True


def module_of(name: str) -> str:
    return name.split("__mutmut_")[0].rsplit(".", 1)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--equivalents", type=Path, default=Path("mutation-equivalents.txt"))
    parser.add_argument("--quiet", action="store_true", help="no list of survivors")
    args = parser.parse_args(argv)
    globs = _equivalents(args.equivalents)
    per: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    survivors: list[str] = []
    for name, status in _results():
        module = module_of(name)
        if status in ("killed", "timeout"):
            per[module]["killed"] += 1
        elif any(fnmatch.fnmatchcase(name, g) for g in globs):
            per[module]["equivalent"] += 1
        elif status == "survived" and message_only(name):
            per[module]["message"] += 1
        elif status in ("survived", "no tests", "suspicious"):
            per[module]["survived"] += 1
            survivors.append(f"{name}: {status}")
        else:
            per[module]["not run"] += 1
    for module, n in sorted(per.items()):
        scored = n["killed"] + n["survived"]
        if not scored:
            continue
        print(
            f"{module:45s} {100.0 * n['killed'] / scored:5.1f} % killed of {scored:4d}"
            f"  (equivalent {n['equivalent']}, message-only {n['message']}"
            + (f", not run {n['not run']}" if n["not run"] else "")
            + ")"
        )
    if survivors and not args.quiet:
        print("\nsurviving mutants (mutmut show NAME):")
        for line in survivors:
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
