"""``model_dirs``: folders whose GGUF files each become an alias named after the file.

``Foo-Q4.gguf`` is served as ``foo-q4``. A split model is served from its first part;
multimodal projectors, hidden files and folders are skipped. When two folders hold the
same name the first one listed wins, with a warning.
"""

from __future__ import annotations

import os
import re

from twisted.logger import Logger
from yaml.nodes import Node

from server_core.aliases import LocalAlias
from server_core.config._values import ConfigReader

__all__ = ["model_alias_name", "scan_model_dirs"]

log = Logger()

_SPLIT_PART = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<total>\d{5})\.gguf$", re.I)


def scan_model_dirs(reader: ConfigReader, node: Node | None) -> list[LocalAlias]:
    """The aliases for the model files in the folders ``node`` lists (``model_dirs``)."""
    found: dict[str, LocalAlias] = {}
    for i, item in enumerate(reader.sequence(node, "model_dirs") if node else []):
        path = f"model_dirs[{i}]"
        for entry in _entries(reader, item, path):
            name = model_alias_name(entry.name)
            if name is None or not entry.is_file():
                continue
            if name in found:
                log.warn(
                    "model file {file} ignored: alias {name!r} is already {other}",
                    file=entry.path,
                    name=name,
                    other=found[name].model_path,
                )
                continue
            found[name] = LocalAlias(
                name=name, model_path=entry.path, source="model", request_params={}
            )
    return list(found.values())


def _entries(reader: ConfigReader, item: Node, path: str) -> list[os.DirEntry[str]]:
    """The entries of one listed folder, by name; a missing folder is an error."""
    folder = reader.path(item, path)
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        reader.fail(f"{path}: model folder {folder} {what}", item)
    try:
        return sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        reader.fail(f"{path}: cannot list {folder}: {exc.strerror or exc}", item)


def model_alias_name(filename: str) -> str | None:
    """The alias for a file in a model folder, or None when it is not a model to serve.

    ``Foo-Q4.gguf`` -> ``foo-q4``; a split model is served from its first part,
    ``big-00001-of-00003.gguf`` -> ``big`` (the other parts -> None). Multimodal
    projector files (``mmproj*.gguf``) are not models of their own.
    """
    lower = filename.lower()
    if not lower.endswith(".gguf") or lower.startswith((".", "mmproj")):
        return None
    split = _SPLIT_PART.match(filename)
    if split is not None:
        if int(split.group("part")) != 1:
            return None
        return split.group("stem").lower()
    stem = lower[: -len(".gguf")]
    return stem or None
