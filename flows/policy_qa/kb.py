"""Policy knowledge base: load and validate ``data/kb/*.yaml`` (entries), synonyms and user dictionary.

Schema of a KB file::

    entries:
      - id: pension_transfer            # unique snake_case, across all files
        question: 退役后养老保险关系怎么转移接续？
        alternates: [军人养老保险怎么转到地方]   # other ways to ask (optional)
        answer: …                        # what the bot replies (required, not empty)
        tags: [社保]                      # optional
        keywords: [养老保险, 转移接续]      # optional: words that point at this entry
        source: 军人保险法；《军人退役基本养老保险关系转移接续暂行办法》   # optional
        updated: 2025-01-10               # optional date
        links: [{title: 办事指南, url: https://…}]  # optional, or plain URLs

Synonyms file (``data/kb/synonyms.yaml``)::

    synonyms:
      怎么: [咋, 咋样, 如何]     # every variant is read as the canonical word on the left

Every problem is a :class:`KBError` whose text names the file and line and gives a hint.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flows.api import DuplicateKeyError, check_unique_keys

__all__ = ["ENTRY_KEYS", "Entry", "KBError", "load_kb", "load_synonyms", "load_userdict"]

ENTRY_KEYS = ("id", "question", "alternates", "answer", "tags", "keywords", "source", "updated", "links")
_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
ANSWER_SOFT_LIMIT = 600  # characters; longer answers do not fit a phone screen


class KBError(Exception):
    """A knowledge-base file problem: ``path:line: message (hint: …)``."""

    def __init__(self, path: Path | str, line: int | None, message: str, hint: str = "") -> None:
        self.path, self.line, self.message, self.hint = str(path), line, message, hint
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}" + (f" (hint: {hint})" if hint else ""))


@dataclass(frozen=True)
class Entry:
    id: str
    question: str
    answer: str
    alternates: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    source: str = ""
    updated: str = ""
    links: tuple[tuple[str, str], ...] = ()  # (title, url)
    file: str = ""
    line: int = 0

    @property
    def texts(self) -> tuple[str, ...]:
        """The ways this entry may be asked: the question first, then the alternates."""
        return (self.question, *self.alternates)


# --------------------------------------------------------------------------- YAML with line numbers


class _LineDict(dict[str, Any]):
    line: int = 0
    key_lines: dict[str, int]


class _LineList(list[Any]):
    lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _LineDict:
    check_unique_keys(node)  # PyYAML would keep the second of two equal keys without a word
    d = _LineDict(yaml.SafeLoader.construct_mapping(loader, node, deep=True))
    d.line = node.start_mark.line + 1
    d.key_lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value}
    return d


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> _LineList:
    items = _LineList(yaml.SafeLoader.construct_sequence(loader, node, deep=True))
    items.lines = [n.start_mark.line + 1 for n in node.value]
    return items


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KBError(path, None, "file not found", "check the path given with --kb / in the config") from None
    except IsADirectoryError:
        raise KBError(path, None, "is a directory", "give the YAML file itself") from None
    except UnicodeDecodeError:
        raise KBError(path, None, "not UTF-8 text", "save the file as UTF-8") from None
    try:
        return yaml.load(text, Loader=_Loader)
    except DuplicateKeyError as e:
        raise KBError(path, e.problem_mark.line + 1 if e.problem_mark else None, str(e.problem),
                      DuplicateKeyError.HINT) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise KBError(path, line, f"YAML syntax error: {e.problem}",
                      "indent with spaces, and quote text that contains ': ' or ' #'") from None
    except yaml.YAMLError as e:
        raise KBError(path, None, f"YAML error: {e}") from None


def _line(d: Any, key: str | None = None) -> int | None:
    if isinstance(d, _LineDict):
        return d.key_lines.get(key, d.line) if key else d.line
    return None


# --------------------------------------------------------------------------- entries


def _text(value: Any, path: Path, line: int | None, what: str, *, required: bool) -> str:
    if value is None:
        if required:
            raise KBError(path, line, f"{what} is missing", "every entry needs an id, a question and an answer")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise KBError(path, line, f"{what} must be text", "write it on one line, or use '|' for several lines")
    text = str(value).strip()
    if required and not text:
        raise KBError(path, line, f"{what} is empty", "write the text, or remove the entry")
    return text


def _texts(value: Any, path: Path, line: int | None, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise KBError(path, line, f"{what} must be a list of texts", "write [text one, text two]")
    out: list[str] = []
    for i, v in enumerate(value):
        item_line = value.lines[i] if isinstance(value, _LineList) else line
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise KBError(path, item_line, f"{what}: item {i + 1} must be text", "write [text one, text two]")
        s = str(v).strip()
        if not s:
            raise KBError(path, item_line, f"{what}: item {i + 1} is empty", "remove the empty item")
        out.append(s)
    return tuple(out)


def _links(value: Any, path: Path, line: int | None, eid: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list):
        raise KBError(path, line, f"entry '{eid}': links must be a list", "write [{title: 指南, url: https://…}]")
    out = []
    for item in value:
        if isinstance(item, str):
            title, url = item, item
        elif isinstance(item, dict) and isinstance(item.get("url"), str):
            title, url = str(item.get("title") or item["url"]), item["url"]
        else:
            raise KBError(path, _line(item) or line, f"entry '{eid}': a link needs a url",
                          "write {title: 指南, url: https://…} or just the URL")
        if not re.match(r"^https?://\S+$", url):
            raise KBError(path, _line(item) or line, f"entry '{eid}': link {url!r} is not a web address",
                          "links start with http:// or https://")
        out.append((title, url))
    return tuple(out)


def _updated(value: Any, path: Path, line: int | None, eid: str) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    raise KBError(path, line, f"entry '{eid}': updated {value!r} is not a date", "write it as 2025-01-31")


def _entries_of(data: Any, path: Path) -> list[Any]:
    if data is None:
        raise KBError(path, None, "file is empty", "start the file with 'entries:'")
    if not isinstance(data, dict) or "entries" not in data:
        raise KBError(path, _line(data) if isinstance(data, dict) else 1, "no 'entries:' list at the top",
                      "a knowledge-base file starts with 'entries:' followed by '- id: …' items")
    extra = sorted(set(data) - {"entries"})
    if extra:
        raise KBError(path, _line(data, extra[0]), f"unknown top-level key '{extra[0]}'", "only 'entries' is allowed")
    items = data["entries"]
    if not isinstance(items, list):
        raise KBError(path, _line(data, "entries"), "'entries' must be a list", "each entry starts with '- id: …'")
    return items


def load_kb(paths: list[Path] | tuple[Path, ...]) -> list[Entry]:
    """Load and validate one or more KB files; ids are unique across all of them."""
    if not paths:
        raise KBError("<kb>", None, "no knowledge-base file given", "pass --kb data/kb/policy.yaml")
    entries: list[Entry] = []
    seen_ids: dict[str, tuple[str, int]] = {}
    seen_texts: dict[str, tuple[str, str, int]] = {}
    from flows.api import normalize  # local import keeps this module importable for schema tools

    for path in paths:
        path = Path(path)
        items = _entries_of(_read_yaml(path), path)
        for pos, raw in enumerate(items):
            item_line = items.lines[pos] if isinstance(items, _LineList) else None
            if not isinstance(raw, dict):
                raise KBError(path, item_line, f"entry {pos + 1} is not a mapping",
                              "each entry is '- id: …' followed by indented 'question:', 'answer:' …")
            line = _line(raw) or item_line or 0
            unknown = [k for k in raw if k not in ENTRY_KEYS]
            if unknown:
                close = difflib.get_close_matches(str(unknown[0]), ENTRY_KEYS, n=1, cutoff=0.6)
                raise KBError(path, _line(raw, unknown[0]), f"unknown key '{unknown[0]}'",
                              (f"did you mean '{close[0]}'? " if close else "") + "allowed: " + ", ".join(ENTRY_KEYS))
            eid = _text(raw.get("id"), path, line, "id", required=True)
            if not _ID_RE.match(eid):
                raise KBError(path, _line(raw, "id"), f"id '{eid}' is not snake_case",
                              "use lower-case letters, digits and _, starting with a letter (e.g. pension_transfer)")
            if eid in seen_ids:
                first_file, first_line = seen_ids[eid]
                where = f"line {first_line}" if first_file == str(path) else f"{first_file}:{first_line}"
                raise KBError(path, _line(raw, "id"), f"duplicate id '{eid}'",
                              f"ids must be unique; the first is at {where}")
            seen_ids[eid] = (str(path), _line(raw, "id") or line)
            question = _text(raw.get("question"), path, _line(raw, "question"), f"entry '{eid}': question",
                             required=True)
            answer = _text(raw.get("answer"), path, _line(raw, "answer"), f"entry '{eid}': answer", required=True)
            if len(answer) > ANSWER_SOFT_LIMIT:
                raise KBError(path, _line(raw, "answer"), f"entry '{eid}': answer is {len(answer)} characters",
                              f"keep answers phone-sized (at most {ANSWER_SOFT_LIMIT}); link to details instead")
            alternates = _texts(raw.get("alternates"), path, _line(raw, "alternates"), f"entry '{eid}': alternates")
            for text in (question, *alternates):
                key = normalize(text)
                if not key:
                    raise KBError(path, line, f"entry '{eid}': question {text!r} has no letters",
                                  "write the question in words")
                if key in seen_texts and seen_texts[key][1] != eid:
                    f0, id0, l0 = seen_texts[key]
                    raise KBError(path, line, f"entry '{eid}': question {text!r} is also a question of '{id0}'",
                                  f"the same question cannot lead to two answers; see {f0}:{l0}")
                seen_texts.setdefault(key, (str(path), eid, line))
            entries.append(Entry(
                id=eid,
                question=question,
                answer=answer,
                alternates=tuple(dict.fromkeys(a for a in alternates if a != question)),
                tags=_texts(raw.get("tags"), path, _line(raw, "tags"), f"entry '{eid}': tags"),
                keywords=_texts(raw.get("keywords"), path, _line(raw, "keywords"), f"entry '{eid}': keywords"),
                source=_text(raw.get("source"), path, _line(raw, "source"), f"entry '{eid}': source", required=False),
                updated=_updated(raw.get("updated"), path, _line(raw, "updated"), eid),
                links=_links(raw.get("links"), path, _line(raw, "links"), eid),
                file=str(path),
                line=line,
            ))
    if not entries:
        raise KBError(paths[0], None, "no entries", "add at least one entry under 'entries:'")
    return entries


# --------------------------------------------------------------------------- synonyms and user dictionary


def load_synonyms(path: Path) -> dict[str, str]:
    """Read ``synonyms: {canonical: [variant, …]}``; returns variant → canonical."""
    data = _read_yaml(Path(path))
    if data is None:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("synonyms"), dict):
        raise KBError(path, _line(data) if isinstance(data, dict) else 1, "no 'synonyms:' mapping at the top",
                      "write 'synonyms:' then lines like '  怎么: [咋, 如何]'")
    groups = data["synonyms"]
    mapping: dict[str, str] = {}
    where: dict[str, int | None] = {}
    for canon, variants in groups.items():
        line = _line(groups, str(canon))
        canon_s = _text(canon, path, line, "synonym word", required=True)
        for v in _texts(variants, path, line, f"synonyms of '{canon_s}'"):
            if v == canon_s:
                continue
            if v in mapping and mapping[v] != canon_s:
                raise KBError(path, line, f"'{v}' is a synonym of both '{mapping[v]}' and '{canon_s}'",
                              f"a word can belong to one group only; the other is at line {where[v]}")
            if v in groups and v != canon_s:
                raise KBError(path, line, f"'{v}' is listed as a variant and as a group of its own",
                              "merge the two groups under one word")
            mapping[v] = canon_s
            where[v] = line
    return mapping


def load_userdict(path: Path) -> list[tuple[str, int | None, str | None]]:
    """Read a jieba user dictionary: ``word [freq] [tag]`` per line, ``#`` comments allowed."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise KBError(path, None, "file not found", "check the user dictionary path") from None
    except UnicodeDecodeError:
        raise KBError(path, None, "not UTF-8 text", "save the file as UTF-8") from None
    words: list[tuple[str, int | None, str | None]] = []
    for n, raw in enumerate(lines, 1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) > 3:
            raise KBError(path, n, f"too many fields in {raw.strip()!r}",
                          "write one word per line: word [frequency] [tag], e.g. '优待证 20 n'")
        freq: int | None = None
        tag: str | None = None
        for p in parts[1:]:
            if p.isdigit():
                freq = int(p)
            elif tag is None:
                tag = p
            else:
                raise KBError(path, n, f"cannot read {raw.strip()!r}", "the frequency must be a whole number")
        words.append((parts[0], freq, tag))
    return words
