"""YAML loading that remembers line numbers, for errors such as ``intents/jobs.yaml:12: … (hint: …)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class YamlFileError(Exception):
    """A content file problem with its file, line and a hint."""

    def __init__(self, path: Path | str, line: int | None, message: str, hint: str = "") -> None:
        self.path, self.line, self.message, self.hint = str(path), line, message, hint
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}" + (f" (hint: {hint})" if hint else ""))


class LineDict(dict[str, Any]):
    """A mapping from YAML with ``line`` (of the mapping) and ``key_lines`` (per key)."""

    line: int = 0
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    d = LineDict(yaml.SafeLoader.construct_mapping(loader, node, deep=True))
    d.line = node.start_mark.line + 1
    d.key_lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value}
    return d


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(path: Path) -> Any:
    """Parse a YAML file into LineDicts; syntax errors become YamlFileError with the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise YamlFileError(path, None, "file not found") from None
    except UnicodeDecodeError:
        raise YamlFileError(path, None, "not UTF-8 text", "save the file as UTF-8") from None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else None
        raise YamlFileError(path, line, f"YAML syntax error: {e.problem}",
                            "indent with spaces and quote text that contains ':' or '#'") from None


def line_of(d: Any, key: str | None = None) -> int | None:
    """Line of a LineDict (or of one of its keys)."""
    if isinstance(d, LineDict):
        return d.key_lines.get(key, d.line) if key else d.line
    return None
