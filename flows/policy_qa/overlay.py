"""The knowledge base the bot answers from: the shipped YAML seed with the console's edits laid over it.

The YAML files (``qa.kb`` in the config, ``data/kb/policy.yaml``) are the **seed**: what a new
installation starts with, reviewed in git. Entries staff add or change in the console are stored in
the database (:mod:`storage.kb`); an edited entry replaces the seed entry of the same id, a deleted one
hides it, a new one is added after the seed's. ``vetbot qa export`` writes the effective knowledge base
back as YAML in the seed's schema (to review, or to make it the new seed).

Validation is the YAML loader's own (:func:`flows.policy_qa.kb.load_kb`): the effective knowledge base
is written as one YAML document with one key per line and loaded; a :class:`KBError`'s line number
then says which entry and which field is wrong, and :func:`check` turns it into a Chinese message at
that field of the console's form.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from flows.policy_qa.kb import ANSWER_SOFT_LIMIT, Entry, KBError, load_kb, load_synonyms, load_userdict
from storage import kb as store

log = logging.getLogger("vetbot.qa")

#: What :attr:`Entry.file` says for an entry that comes from the console.
CONSOLE_FILE = "后台"
_FAR_FUTURE = datetime(9999, 1, 1)  # a candidate row sorts after every saved one
_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")


def entry_data(e: Entry) -> dict[str, Any]:
    """An entry's fields as the YAML schema writes them (without ``id``; empty fields left out)."""
    out: dict[str, Any] = {"question": e.question}
    if e.alternates:
        out["alternates"] = list(e.alternates)
    out["answer"] = e.answer
    for key in ("tags", "keywords"):
        if getattr(e, key):
            out[key] = list(getattr(e, key))
    if e.source:
        out["source"] = e.source
    if e.updated:
        out["updated"] = e.updated
    if e.links:
        out["links"] = [{"title": t, "url": u} if t != u else u for t, u in e.links]
    return out


def seed(config: Any) -> list[Entry]:
    """The YAML seed's entries (validated; :class:`KBError` with file and line when a file is wrong)."""
    return load_kb([config.path(p) for p in config.qa.kb])


def merged(seed_entries: Sequence[Entry], rows: Sequence[store.OverlayRow]) -> list[tuple[str, dict[str, Any], str]]:
    """``(id, fields, origin)`` of the effective knowledge base: seed order, edited entries in place,
    deleted ones left out, new ones after; ``origin`` is ``seed``, ``edited`` or ``new``."""
    by_id = {r.id: r for r in rows}
    out: list[tuple[str, dict[str, Any], str]] = []
    seen: set[str] = set()
    for e in seed_entries:
        seen.add(e.id)
        r = by_id.get(e.id)
        if r is None:
            out.append((e.id, entry_data(e), "seed"))
        elif not r.deleted:
            out.append((e.id, dict(r.data), "edited"))
    for r in rows:
        if r.id not in seen and not r.deleted:
            out.append((r.id, dict(r.data), "new"))
    return out


# --------------------------------------------------------------------------- validation through the loader


def _scalar(value: Any) -> str:
    """A value as YAML flow text on one line (JSON is YAML; characters YAML reads as line breaks or
    refuses are escaped)."""
    text = json.dumps(value, ensure_ascii=False)
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)


@dataclass
class _Doc:
    text: str
    where: dict[int, tuple[int, str]] = field(default_factory=dict)  # line -> (item index, key)


def _document(items: Sequence[tuple[str, dict[str, Any]]]) -> _Doc:
    lines = ["entries:"]
    doc = _Doc("")
    for i, (eid, data) in enumerate(items):
        lines.append(f"- id: {_scalar(eid)}")
        doc.where[len(lines)] = (i, "id")
        for key in store.FIELDS:
            value = data.get(key)
            if value is None or value == "" or value == []:
                continue
            lines.append(f"  {key}: {_scalar(value)}")
            doc.where[len(lines)] = (i, key)
    doc.text = "\n".join(lines) + "\n"
    return doc


def validate(items: Sequence[tuple[str, dict[str, Any]]]) -> list[Entry]:
    """Load ``(id, fields)`` items with the YAML loader; a :class:`FieldError` says where it failed."""
    doc = _document(items)
    with tempfile.TemporaryDirectory(prefix="vetbot-kb-") as tmp:
        path = Path(tmp) / "kb.yaml"
        path.write_text(doc.text, encoding="utf-8")
        try:
            return load_kb([path])
        except KBError as e:
            index, key = doc.where.get(e.line or 0, (-1, ""))
            raise FieldError(index, items[index][0] if index >= 0 else "", key, e) from None


class FieldError(Exception):
    """The loader refused the knowledge base: item ``index`` (entry ``entry_id``), field ``key``."""

    def __init__(self, index: int, entry_id: str, key: str, error: KBError) -> None:
        super().__init__(str(error))
        self.index, self.entry_id, self.key, self.error = index, entry_id, key, error

    def zh(self, data: dict[str, Any] | None = None) -> tuple[str, str]:
        """``(form field, Chinese message)`` for the console."""
        return _zh(self.key, self.error.message, data or {})


def _zh(key: str, message: str, data: dict[str, Any]) -> tuple[str, str]:
    m = re.search(r"question '(.*)' is also a question of '([^']+)'", message) or \
        re.search(r'question "(.*)" is also a question of \'([^\']+)\'', message)
    if m:
        text, other = m.group(1), m.group(2)
        where = "question" if text == data.get("question") else "alternates"
        return where, f"“{text}”已经是条目 {other} 的问法。同一个问题不能有两个答案：请改写，或去改那一条。"
    m = re.search(r"question '(.*)' has no letters", message)
    if m:
        where = "question" if m.group(1) == data.get("question") else "alternates"
        return where, f"“{m.group(1)}”里没有文字，请用文字写出问题。"
    if "is not snake_case" in message:
        return "id", "编号只能用小写英文字母、数字和下划线，并以字母开头，例如 pension_transfer。"
    if message.startswith("duplicate id"):
        return "id", "这个编号已经有别的条目在用，请换一个。"
    m = re.search(r"answer is (\d+) characters", message)
    if m:
        return "answer", (f"回答有 {m.group(1)} 个字，最多 {ANSWER_SOFT_LIMIT} 个字（手机一屏能看完）。"
                          "详细内容请放到“链接”里。")
    m = re.search(r"(\w+) is (?:missing|empty)$", message)
    if m:
        return (m.group(1) if m.group(1) in ("id", *store.FIELDS) else key or "question"), "这一项必须填写。"
    if "is not a web address" in message or "a link needs a url" in message:
        return "links", "每行一个链接：标题和以 http:// 或 https:// 开头的网址，中间空一格。"
    if "is not a date" in message:
        return "updated", "日期请写成 2025-01-31 这样。"
    if "must be text" in message or "must be a list" in message:
        return key or "question", "这一项的格式不对，请只写文字。"
    return key or "question", f"知识库检查没有通过：{message}"


def check(seed_entries: Sequence[Entry], rows: Sequence[store.OverlayRow], entry_id: str,
          data: dict[str, Any] | None) -> dict[str, str]:
    """Errors by form field (empty: fine) if entry ``entry_id`` were saved as ``data`` (None: deleted),
    checked with the loader on the whole effective knowledge base as it would then be."""
    if data is not None:  # the loader stops at the first problem; both required fields at once is kinder
        missing = {k: "这一项必须填写。" for k in ("question", "answer") if not str(data.get(k) or "").strip()}
        if missing:
            return missing
    others = [r for r in rows if r.id != entry_id]
    if data is not None:
        others.append(store.OverlayRow(entry_id, data, False, 0, "", "", _FAR_FUTURE))
    else:
        others.append(store.OverlayRow(entry_id, {}, True, 0, "", "", _FAR_FUTURE))
    items = [(eid, d) for eid, d, _ in merged(seed_entries, others)]
    try:
        validate(items)
    except FieldError as e:
        if e.entry_id != entry_id and e.index >= 0:
            # Another entry broke (it should not: each was checked when saved); say which.
            key, msg = e.zh(items[e.index][1])
            return {"question": f"和条目 {e.entry_id} 冲突：{msg}"}
        key, msg = e.zh(data)
        return {key: msg}
    return {}


def effective(seed_entries: Sequence[Entry], rows: Sequence[store.OverlayRow]) -> list[Entry]:
    """The knowledge base the bot answers from. An overlay row the loader refuses (the seed changed
    under it, e.g. a new seed entry now asks the same question) is left out and logged, so a deploy
    never stops the bot; seed entries keep their file and line, console ones say :data:`CONSOLE_FILE`."""
    rows = list(rows)
    seed_by_id = {e.id: e for e in seed_entries}
    while True:
        items = merged(seed_entries, rows)
        try:
            entries = validate([(eid, d) for eid, d, _ in items])
        except FieldError as e:
            bad = items[e.index][0] if e.index >= 0 else None
            if bad is None or not any(r.id == bad for r in rows):
                raise e.error from None
            log.error("qa: the console's edit of entry %s no longer fits the knowledge base, left out: %s",
                      bad, e.error.message)
            rows = [r for r in rows if r.id != bad]
            continue
        out = []
        for (eid, _, origin), entry in zip(items, entries, strict=True):
            out.append(seed_by_id[eid] if origin == "seed" else replace(entry, file=CONSOLE_FILE, line=0))
        return out


def digest(rows: Sequence[store.OverlayRow]) -> str:
    """Changes whenever the overlay does ('' for none: the engine of the seed alone)."""
    if not rows:
        return ""
    h = hashlib.sha256()
    for r in sorted(rows, key=lambda r: r.id):
        h.update(f"{r.id}\x1f{r.version}\x1f{r.deleted}\x1f{_scalar(r.data)}\x1e".encode())
    return h.hexdigest()[:16]


def build_engine(config: Any, rows: Sequence[store.OverlayRow], previous: Any = None, **kwargs: Any) -> Any:
    """A :class:`QAEngine` on the effective knowledge base (blocking: run it in a thread).

    With the sentence encoder, ``previous`` (the engine in use) lends its embeddings: only the questions
    an edit added or changed are embedded, so a save costs seconds, not a re-embedding of the whole
    knowledge base (measured on the shared 2-core machine: 33 s → 4 s); any surprise falls back to a full build."""
    from flows.policy_qa.engine import QAEngine

    q = config.qa
    entries = effective(seed(config), rows)
    synonyms = load_synonyms(config.path(q.synonyms)) if q.synonyms else {}
    userdict = load_userdict(config.path(q.userdict)) if q.userdict else []
    if q.use_encoder and previous is not None and getattr(previous, "_kb_vecs", None) is not None:
        try:
            eng = QAEngine(entries, synonyms, userdict, use_encoder=False, **kwargs)
            _reuse_embeddings(eng, previous)
            # The constructor calibrated a lexical-only engine; calibrate again with the encoder in place,
            # or the hot-reloaded engine decides otherwise than the same KB loaded at start-up.
            eng.calibrate()
            return eng
        except Exception as e:  # the engine's insides changed: build it the long way
            log.warning("qa: could not reuse the previous engine's embeddings (%s); embedding all", e)
    return QAEngine(entries, synonyms, userdict, use_encoder=q.use_encoder, **kwargs)


def _encoder_texts(eng: Any) -> list[str]:
    # What QAEngine._build_encoder embeds: every question and alternate, prepared for the encoder.
    return [eng.text.encoder_text(t, 10_000) or t for e in eng.entries for t in e.texts]


def _reuse_embeddings(eng: Any, previous: Any) -> None:
    import numpy as np

    known = dict(zip(_encoder_texts(previous), previous._kb_vecs, strict=True))
    texts = _encoder_texts(eng)
    missing = [t for t in dict.fromkeys(texts) if t not in known]
    if missing:
        known.update(zip(missing, previous.encoder.embed_kb(missing), strict=True))
    eng.encoder = previous.encoder
    eng._kb_vecs = np.stack([known[t] for t in texts]).astype(previous._kb_vecs.dtype, copy=False)


async def load_rows(db: Any) -> list[store.OverlayRow]:
    """The overlay rows ([] without a database — the CLI's ``qa ask`` answers from the seed — or when it
    cannot be read, logged)."""
    if db is None:
        return []
    from sqlalchemy.exc import SQLAlchemyError

    try:
        async with db.session() as s:
            return await store.overlay(s)
    except SQLAlchemyError as e:  # the bot still answers from the seed; the console shows the edits again
        log.error("qa: cannot read the console's knowledge-base edits, answering from the YAML seed: %s",
                  type(e).__name__)
        return []


def to_yaml(entries: Sequence[Entry]) -> str:
    """The knowledge base as a YAML file in the seed's schema (``vetbot qa export``)."""
    import yaml

    items = [{"id": e.id, **entry_data(e)} for e in entries]
    return ("# 政策问答知识库（由 vetbot qa export 从种子文件和后台修改合成）\n"
            + yaml.safe_dump({"entries": items}, allow_unicode=True, sort_keys=False, width=100))


