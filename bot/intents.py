"""The intent catalogue (``intents/*.yaml``): loading, validation and matching.

Schema of one file::

    intents:
      - id: job_subscribe            # unique across all files
        flow: jobs_subscribe         # a registered flow
        help: 订阅招聘信息            # one line shown in the help menu
        examples: [订阅招聘, 有新岗位通知我]   # at least one
        keywords: [订阅招聘, 岗位提醒]        # substring match on normalised text
        negative: [退订, 取消订阅]           # any of these present -> this intent is not matched
        regex: ['^找工作\\s*(?P<words>.*)$']  # named groups become ctx.intent_slots
        menu_keys: [JOB_SUBSCRIBE]          # CLICK EventKeys of the custom menu
        priority: 10                        # higher wins among keyword hits
        roles: [staff]                      # only users with one of these roles
        menu: 3                             # listed in the numbered 帮助 menu, at this position
                                            # (true: after the numbered ones, in file order)
        global: false                       # exact-phrase command honoured inside any flow
                                            # (its keywords also match inside a sentence)

Matching order: menu key > global command (exact) > regex > keywords (minus negatives) > fuzzy
match of examples. Below the accept threshold but above the suggest threshold the caller offers
a numbered "您是想…" list; below that the fallback flow takes the text.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from rapidfuzz import fuzz, process

from bot.text import normalize, strip_fillers, to_simplified
from bot.yamlfile import YamlFileError, line_of, load_yaml
from storage.models import KNOWN_ROLES

KEYS = ("id", "flow", "help", "examples", "keywords", "negative", "regex", "menu_keys", "priority", "roles",
        "menu", "global")
_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Intent:
    id: str
    flow: str
    help: str = ""
    examples: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()
    regex: tuple[re.Pattern[str], ...] = ()
    menu_keys: tuple[str, ...] = ()
    priority: int = 0
    roles: frozenset[str] = frozenset()
    menu: bool = False
    # Position in the 帮助 menu (lower first); menu: true without a number sorts after numbered ones.
    menu_order: int = 1000
    is_global: bool = False
    file: str = ""
    line: int = 0

    def allowed(self, roles: set[str]) -> bool:
        return not self.roles or bool(self.roles & roles)


@dataclass
class Match:
    """The matcher's verdict. ``how`` is menu, global, regex, keyword, fuzzy, suggest or none."""

    intent: Intent | None
    how: str
    score: float = 0.0
    slots: dict[str, str] = field(default_factory=dict)
    suggestions: list[Intent] = field(default_factory=list)


@lru_cache(maxsize=65536)
def light_normalize(text: str) -> str:
    """For regexes: NFKC, traditional → simplified, lower case, whitespace collapsed; punctuation kept."""
    t = to_simplified(unicodedata.normalize("NFKC", text)).lower()
    return " ".join(t.split())


def _strings(value: Any, path: Path, line: int | None, key: str, iid: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise YamlFileError(path, line, f"intent '{iid}': '{key}' must be a list of texts",
                            f"write {key}: [第一个, 第二个]")
    return tuple(str(v) for v in value if str(v).strip())


def load_intents(folder: Path, known_flows: set[str] | None = None) -> list[Intent]:
    """Load and validate every ``*.yaml`` in ``folder``. Raises YamlFileError on the first problem."""
    errors: list[YamlFileError] = []
    intents = _load(folder, known_flows, errors, stop=True)
    return intents


def check_intents(folder: Path, known_flows: set[str] | None = None) -> tuple[list[Intent], list[YamlFileError]]:
    """Load every ``*.yaml`` in ``folder`` and collect ALL problems (file, line, hint) instead of stopping
    at the first: the intents that loaded, and the errors. Also an example shared by two intents."""
    errors: list[YamlFileError] = []
    intents = _load(folder, known_flows, errors, stop=False)
    owner: dict[str, Intent] = {}
    for i in intents:
        for e in i.examples:
            key = normalize(e)
            if not key:
                continue
            first = owner.setdefault(key, i)
            if first.id != i.id:
                errors.append(YamlFileError(Path(i.file), i.line, f"intent '{i.id}': example {e!r} is also an "
                                            f"example of '{first.id}'", f"keep it in one intent (see {first.file}:{first.line})"))
    return intents, errors


def _load(folder: Path, known_flows: set[str] | None, errors: list[YamlFileError], *, stop: bool) -> list[Intent]:
    if not folder.is_dir():
        raise YamlFileError(folder, None, "intents folder not found", "set bot.intents_dir in the config")
    files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
    if not files:
        raise YamlFileError(folder, None, "no *.yaml files", "the bot needs at least one intents file")
    intents: list[Intent] = []
    seen: dict[str, tuple[str, int]] = {}
    menu_seen: dict[str, tuple[str, int]] = {}
    for path in files:
        try:
            doc = load_yaml(path)
            if doc is None:
                continue
            if not isinstance(doc, dict) or "intents" not in doc:
                raise YamlFileError(path, 1, "expected a top-level 'intents:' list", "start the file with 'intents:'")
            extra = [k for k in doc if k != "intents"]
            if extra:
                raise YamlFileError(path, line_of(doc, extra[0]), f"unknown top-level key '{extra[0]}'",
                                    "only 'intents:' is allowed at the top")
            items = doc["intents"] or []
            if not isinstance(items, list):
                raise YamlFileError(path, line_of(doc, "intents"), "'intents' must be a list",
                                    "each item starts with '- id:'")
        except YamlFileError as e:
            if stop:
                raise
            errors.append(e)
            continue
        for item in items:
            try:
                intents.append(_one(path, item, known_flows, seen, menu_seen))
            except YamlFileError as e:
                if stop:
                    raise
                errors.append(e)
    return intents


def _one(path: Path, item: Any, known_flows: set[str] | None, seen: dict[str, tuple[str, int]],
         menu_seen: dict[str, tuple[str, int]]) -> Intent:
    line = line_of(item)
    if not isinstance(item, dict):
        raise YamlFileError(path, line, "an intent must be a mapping", "each item starts with '- id: …'")
    for k in item:
        if k not in KEYS:
            near = difflib.get_close_matches(str(k), KEYS, n=1, cutoff=0.5)
            raise YamlFileError(path, line_of(item, k), f"unknown key '{k}'",
                                f"did you mean '{near[0]}'?" if near else f"valid keys: {', '.join(KEYS)}")
    iid = item.get("id")
    if not isinstance(iid, str) or not _ID_RE.match(iid):
        raise YamlFileError(path, line, f"bad or missing id {iid!r}", "ids are snake_case, e.g. job_subscribe")
    if iid in seen:
        f, ln = seen[iid]
        raise YamlFileError(path, line_of(item, "id"), f"duplicate id '{iid}'", f"the first is at {f}:{ln}")
    seen[iid] = (str(path), line or 0)
    flow = item.get("flow")
    if not isinstance(flow, str) or not flow:
        raise YamlFileError(path, line, f"intent '{iid}' has no flow", "add flow: <name of a flow>")
    if known_flows is not None and flow not in known_flows:
        near = difflib.get_close_matches(flow, sorted(known_flows), n=1, cutoff=0.5)
        raise YamlFileError(path, line_of(item, "flow"), f"intent '{iid}': unknown flow '{flow}'",
                            f"did you mean '{near[0]}'?" if near else f"known flows: {', '.join(sorted(known_flows))}")
    examples = _strings(item.get("examples"), path, line_of(item, "examples"), "examples", iid)
    if not examples:
        raise YamlFileError(path, line_of(item, "examples") or line, f"intent '{iid}' has no examples",
                            "add examples: [至少一个用户会说的话]")
    patterns = []
    for rx in _strings(item.get("regex"), path, line_of(item, "regex"), "regex", iid):
        try:
            patterns.append(re.compile(rx))
        except re.error as e:
            raise YamlFileError(path, line_of(item, "regex"), f"intent '{iid}': bad regex {rx!r}: {e}",
                                "quote the regex in single quotes and escape backslashes once") from None
    menu_keys = _strings(item.get("menu_keys"), path, line_of(item, "menu_keys"), "menu_keys", iid)
    for mk in menu_keys:
        if mk in menu_seen:
            f, ln = menu_seen[mk]
            raise YamlFileError(path, line_of(item, "menu_keys"), f"menu key '{mk}' used twice",
                                f"also at {f}:{ln}")
        menu_seen[mk] = (str(path), line or 0)
    priority = item.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise YamlFileError(path, line_of(item, "priority"), f"intent '{iid}': priority must be a whole number")
    if "global" in item and not isinstance(item["global"], bool):
        raise YamlFileError(path, line_of(item, "global"), f"intent '{iid}': global must be true or false")
    roles = _strings(item.get("roles"), path, line_of(item, "roles"), "roles", iid)
    unknown = [r for r in roles if r not in KNOWN_ROLES]
    if unknown:  # a typo here (staf) would hide the intent from everyone, silently
        near = difflib.get_close_matches(unknown[0], KNOWN_ROLES, n=1, cutoff=0.5)
        raise YamlFileError(path, line_of(item, "roles"), f"intent '{iid}': unknown role '{unknown[0]}'",
                            f"did you mean '{near[0]}'?" if near else f"known roles: {', '.join(KNOWN_ROLES)}")
    menu = item.get("menu", False)
    if not isinstance(menu, (bool, int)) or (not isinstance(menu, bool) and menu < 1):
        raise YamlFileError(path, line_of(item, "menu"), f"intent '{iid}': menu must be true, false or a position",
                            "write menu: 3 to list it third in the 帮助 menu")
    return Intent(
        id=iid, flow=flow, help=str(item.get("help") or ""), examples=examples,
        keywords=tuple(normalize(k) for k in _strings(item.get("keywords"), path, line, "keywords", iid)),
        negative=tuple(normalize(k) for k in _strings(item.get("negative"), path, line, "negative", iid)),
        regex=tuple(patterns), menu_keys=menu_keys, priority=priority,
        roles=frozenset(roles),
        menu=menu is not False, menu_order=1000 if isinstance(menu, bool) else menu,
        is_global=bool(item.get("global", False)),
        file=str(path), line=line or 0,
    )


class IntentMatcher:
    """Routes a text (or a menu key) to an intent."""

    def __init__(self, intents: list[Intent], *, accept: float = 88.0, suggest: float = 65.0) -> None:
        self.intents = intents
        self.by_id = {i.id: i for i in intents}
        self.accept, self.suggest = accept, suggest
        self._menu = {k: i for i in intents for k in i.menu_keys}
        self._global = {normalize(p): i for i in intents if i.is_global for p in (*i.examples, *i.keywords)
                        if normalize(p)}
        # Symbol-only commands (？) by their raw text: normalising would leave nothing (and match any emoji).
        self._global_raw = {p.strip(): i for i in intents if i.is_global for p in i.examples if not normalize(p)}
        self._examples: list[tuple[str, Intent]] = [
            (strip_fillers(normalize(e)), i) for i in intents if not i.is_global for e in i.examples
        ]
        # A global intent's keywords also match inside a sentence (我要转人工), like any other intent's.
        self._keyword_intents = [i for i in intents if i.keywords]
        self._regex_intents = [i for i in intents if i.regex]
        self._entry_names: dict[str, Intent] = {}
        for i in intents:
            if (i.menu or i.menu_keys) and not i.is_global:
                for t in (*i.examples, *i.keywords):
                    self._entry_names.setdefault(strip_fillers(normalize(t)), i)

    def entry_named(self, text: str, roles: set[str]) -> Intent | None:
        """The feature a message names exactly — the whole text is an example or keyword of an intent of
        the 帮助 menu or the custom menu (英烈名录, 发起集结, 我的信息) — else None. Inside a flow such a
        message leaves the flow for that feature, even at a step that takes any text."""
        key = strip_fillers(normalize(text))
        if not key or key.isdigit():
            return None
        intent = self._entry_names.get(key)
        return intent if intent is not None and intent.allowed(roles) else None

    def by_menu_key(self, key: str) -> Intent | None:
        return self._menu.get(key)

    def global_command(self, text: str) -> Intent | None:
        """A global command (帮助, 取消, 返回, 人工 …) when the whole text is one."""
        key = normalize(text)
        return self._global.get(key) if key else self._global_raw.get(text.strip())

    def menu_intents(self, roles: set[str]) -> list[Intent]:
        """The 帮助 menu for a user with ``roles``, in menu order (file order breaks ties)."""
        items = [i for i in self.intents if i.menu and i.allowed(roles)]
        return sorted(items, key=lambda i: i.menu_order)

    def exact(self, text: str, roles: set[str] | None = None) -> Match | None:
        """The exact rules only: a global command (the whole text is one) or a regex. None otherwise.

        These keep priority over matching by meaning (:mod:`bot.understanding`) and never need the
        sentence encoder."""
        roles = roles or set()
        g = self.global_command(text)
        if g is not None and g.allowed(roles):
            return Match(g, "global", 100.0)
        light = light_normalize(text)
        for intent in self._regex_intents:
            if not intent.allowed(roles):
                continue
            for rx in intent.regex:
                m = rx.search(light)
                if m:
                    slots = {k: v.strip() for k, v in m.groupdict().items() if v}
                    return Match(intent, "regex", 100.0, slots)
        return None

    def match(self, text: str, roles: set[str] | None = None) -> Match:
        """The lexical matcher alone (exact rules, keywords, fuzzy examples); the dispatcher uses
        :class:`bot.understanding.Understanding`, which adds meaning and a calibrated confidence."""
        roles = roles or set()
        exact = self.exact(text, roles)
        if exact is not None:
            return exact
        norm = normalize(text)
        best: tuple[int, int, Intent] | None = None
        for intent in self._keyword_intents:
            if not intent.allowed(roles) or any(n in norm for n in intent.negative):
                continue
            hit = max((len(k) for k in intent.keywords if k in norm), default=0)
            if hit and (best is None or (intent.priority, hit) > best[:2]):
                best = (intent.priority, hit, intent)
        if best is not None:
            return Match(best[2], "keyword", 100.0)
        return self._fuzzy(norm, roles)

    def _fuzzy(self, norm: str, roles: set[str]) -> Match:
        query = strip_fillers(norm)
        if not query or not self._examples:
            return Match(None, "none")
        choices = [e for e, _ in self._examples]
        hits = process.extract(query, choices, scorer=fuzz.ratio, limit=12)
        ranked: list[tuple[float, Intent]] = []
        seen: set[str] = set()
        for _, score, idx in hits:
            intent = self._examples[idx][1]
            if intent.id in seen or not intent.allowed(roles) or any(n in norm for n in intent.negative):
                continue
            seen.add(intent.id)
            ranked.append((score, intent))
        if not ranked:
            return Match(None, "none")
        top_score, top = ranked[0]
        if top_score >= self.accept:
            return Match(top, "fuzzy", top_score)
        sugg = [i for s, i in ranked[:3] if s >= self.suggest]
        if sugg:
            return Match(None, "suggest", top_score, suggestions=sugg)
        return Match(None, "none", top_score)
