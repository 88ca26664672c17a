"""The 个人信息保护提示: a YAML file the bureau edits (``privacy.notice``), validated with file, line and a
hint, reloaded when it changes, rendered with the config's numbers so the text stays true."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.api import YamlFileError, line_of, load_yaml

KEYS = ("version", "title", "controller", "contact", "short", "scopes", "sections")
REQUIRED = ("version", "title", "short", "sections")
#: The chat text must fit one message with the question after it (WeChat cuts at 2048 bytes).
SHORT_MAX = 400
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Notice:
    """A loaded notice; ``render`` fills placeholders."""

    version: str
    title: str
    controller: str
    contact: str
    short: str
    scopes: dict[str, str]
    sections: tuple[tuple[str, str], ...]
    values: dict[str, str]

    def render(self, text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: self.values.get(m.group(1), m.group(0)), text).strip()

    def chat(self, scope: str | None = None) -> str:
        """The short notice, led by what the person is about to do (``scope``)."""
        lead = self.scopes.get(scope or "", "")
        return (self.render(lead) + "\n" if lead else "") + self.render(self.short)

    def page_sections(self) -> list[tuple[str, str]]:
        return [(self.render(t), self.render(x)) for t, x in self.sections]


def placeholder_values(config: Any) -> dict[str, str]:
    p = config.privacy
    return {"unfollow_erase_days": str(p.unfollow_erase_days), "conversation_days": str(p.conversation_days),
            "ticket_days": str(p.ticket_days), "push_text_days": str(p.push_text_days)}


def parse(path: Path, doc: Any, values: dict[str, str]) -> Notice:
    """Validate a loaded document; YamlFileError names the line and what to write."""
    if not isinstance(doc, dict):
        raise YamlFileError(path, 1, "the notice must be a mapping", "start with  version: \"2026-1\"")
    for k in doc:
        if k not in KEYS:
            raise YamlFileError(path, line_of(doc, k), f"unknown key '{k}'", f"valid keys: {', '.join(KEYS)}")
    for k in REQUIRED:
        if k not in doc or doc[k] in (None, "", []):
            raise YamlFileError(path, line_of(doc), f"'{k}' is missing or empty",
                                "see data/privacy/notice.yaml for every key")
    version = str(doc["version"]).strip()
    if not version or len(version) > 32:
        raise YamlFileError(path, line_of(doc, "version"), "version must be 1-32 characters", 'e.g. version: "2026-1"')
    texts = {k: str(doc.get(k) or "") for k in ("title", "controller", "contact", "short")}
    vals = {**values, "controller": texts["controller"] or "本局", "contact": texts["contact"] or "回复“人工”留言"}
    scopes = doc.get("scopes") or {}
    if not isinstance(scopes, dict) or not all(isinstance(v, str) for v in scopes.values()):
        raise YamlFileError(path, line_of(doc, "scopes"), "scopes must map a purpose to one line of text",
                            "e.g.  profile: 登记“我的信息”前，请您先了解：")
    sections = doc["sections"]
    if not isinstance(sections, list):
        raise YamlFileError(path, line_of(doc, "sections"), "sections must be a list", "each item: - title: … text: …")
    out: list[tuple[str, str]] = []
    for item in sections:
        if not isinstance(item, dict) or set(item) - {"title", "text"} or not item.get("title") or not item.get("text"):
            raise YamlFileError(path, line_of(item) or line_of(doc, "sections"),
                                "each section needs a title and a text (and nothing else)",
                                "- title: 保存多久\n    text: …")
        out.append((str(item["title"]), str(item["text"])))
    everything = [texts["short"], *(t for pair in out for t in pair), *map(str, scopes.values())]
    for t in everything:
        for name in _PLACEHOLDER.findall(t):
            if name not in vals:
                raise YamlFileError(path, None, f"unknown placeholder {{{name}}}",
                                    f"known: {', '.join('{' + k + '}' for k in sorted(vals))}")
    notice = Notice(version, texts["title"], vals["controller"], vals["contact"], texts["short"],
                    {str(k): str(v) for k, v in scopes.items() if k != "__lines__"}, tuple(out), vals)
    if len(notice.render(notice.short)) > SHORT_MAX:
        raise YamlFileError(path, line_of(doc, "short"), f"short is longer than {SHORT_MAX} characters",
                            "keep the chat text short; put details into sections (the page)")
    return notice


_CACHE: dict[str, tuple[float, Notice]] = {}


def load_notice(config: Any) -> Notice:
    """The notice of ``config`` (re-read when the file changes, so staff edits apply without a restart)."""
    path = config.path(config.privacy.notice)
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        raise YamlFileError(path, None, "file not found", "set privacy.notice to the notice YAML") from None
    values = placeholder_values(config)
    key = f"{path}|{sorted(values.items())}"
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == mtime:
        return hit[1]
    notice = parse(path, load_yaml(path), values)
    _CACHE[key] = (mtime, notice)
    return notice
