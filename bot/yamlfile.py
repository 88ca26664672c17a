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


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """The same key twice in one mapping. PyYAML keeps the last value without a word, so a setting
    written twice (or an intent's ``examples:`` repeated) silently loses the first; we refuse it."""

    def __init__(self, key: str, first_line: int, mark: yaml.Mark) -> None:
        super().__init__(None, None, f"duplicate key '{key}' (the first is at line {first_line})", mark)
        self.key, self.first_line = key, first_line

    HINT = "remove one of the two, or merge their values into one"


def check_unique_keys(node: yaml.MappingNode) -> None:
    """Raise :class:`DuplicateKeyError` (a MarkedYAMLError: its mark is the second key's line) when a
    mapping node has the same scalar key twice. Call it from a mapping constructor."""
    seen: dict[tuple[str, str], int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        ident = (key_node.tag, key_node.value)  # `1:` and `"1":` are different keys
        line = key_node.start_mark.line + 1
        if ident in seen:
            raise DuplicateKeyError(str(key_node.value), seen[ident], key_node.start_mark)
        seen[ident] = line


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys (for files read without line bookkeeping)."""


def _unique_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode) -> Any:
    check_unique_keys(node)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=True)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


class _Loader(yaml.SafeLoader):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    check_unique_keys(node)
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
    except DuplicateKeyError as e:
        raise YamlFileError(path, e.problem_mark.line + 1 if e.problem_mark else None, str(e.problem),
                            DuplicateKeyError.HINT) from None
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else None
        raise YamlFileError(path, line, f"YAML syntax error: {e.problem}",
                            "indent with spaces and quote text that contains ':' or '#'") from None


def line_of(d: Any, key: str | None = None) -> int | None:
    """Line of a LineDict (or of one of its keys)."""
    if isinstance(d, LineDict):
        return d.key_lines.get(key, d.line) if key else d.line
    return None
