"""One reader for the CSV files staff make in Excel or WPS: the volunteer roster, the martyr roll and job
postings all come through here, from a file (the CLI) or an upload (the staff console).

What it does, in order:

1. **Encoding.** UTF-8, UTF-8 with the BOM Excel writes (“CSV UTF-8”), or GBK / GB18030 (what Excel and
   WPS on a Chinese Windows save as plain “CSV”). UTF-8 is tried strictly first (a GBK file is practically
   never valid UTF-8); then GBK, then GB18030. Bytes that decode as GBK but read as nonsense (kana, box
   drawing, Cyrillic between the Chinese: a Big5 or Shift-JIS file) are refused, as are UTF-16 files
   (Excel's “Unicode text”) and anything that is none of these — with the line where reading failed and
   how to save the file properly. :attr:`Table.encoding` says which one was used.
2. **Header.** Column names in any order, matched after removing spaces (also the ideographic space),
   a BOM, full-width forms, case, ``_``/``-`` and marks such as ``*`` or ``（必填）``; each column has
   Chinese aliases (姓名 for ``name``). Missing, unknown and repeated columns are all reported at once,
   an unknown one with the nearest valid name.
3. **Cells.** NUL and other control characters are refused per cell (line and column; the value is never
   quoted: it may be anybody's name or phone). HTML markup is dropped, its text kept (entities
   decoded): a CSV field is text, and WeChat would show an ``<a href>`` as a live link. Whitespace is
   trimmed; single-line columns get line breaks and runs of spaces collapsed; lengths are checked.
4. **Rows.** Every row is read and checked; the importer adds its own checks (phone format, dates …) to
   the same list. Nothing is imported while :attr:`Table.errors` is not empty.

Line numbers are the row numbers Excel and WPS show (the header is line 1; a cell with a line break inside
stays one row). Every error prints as ``line N, column X: <Chinese message>``; X is the column's name as
written in the file's header.

For uploads (the staff console) the whole import — read, check, preview, apply — is one call,
:func:`flows.imports.import_csv`, which returns an :class:`ImportReport` (errors and a per-row preview).
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.text import strip_markup

# --- schema ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of an import.

    ``name`` is the canonical (English) header; ``aliases`` the other names staff write (姓名);
    ``required``: the header must have the column; ``not_empty``: every row must fill it;
    ``max_len`` in characters after cleaning; ``multiline`` keeps line breaks (biographies)."""

    name: str
    label: str
    required: bool = False
    not_empty: bool = False
    aliases: tuple[str, ...] = ()
    max_len: int | None = None
    multiline: bool = False


@dataclass(frozen=True)
class Schema:
    """The columns of one kind of file, and what the file is called in messages (名册, 英烈名录 …)."""

    what: str
    columns: tuple[Column, ...]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def header(self) -> str:
        """The header line to write in a template file: required columns first."""
        return ",".join(c.name for c in self.columns)

    def describe(self) -> str:
        """``name（姓名）必填, phone（手机号）必填, …`` for help texts and error hints."""
        return "，".join(f"{c.name}（{c.label}）" + ("" if c.required else "可选") for c in self.columns)


# --- results -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowError:
    """One problem: ``line`` (1 = the header), the column as written in the file (``column``; ``-`` for
    the row as a whole), the canonical column (``key``), the spreadsheet letter (``letter``: B, AA …) and
    a Chinese ``message`` that says what to change. Never contains a control character's cell value."""

    line: int
    column: str
    message: str
    key: str = ""
    letter: str = ""

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"

    def zh(self) -> str:
        """第 3 行 C 列（phone）：… — for pages staff read."""
        where = f"{self.letter} 列（{self.column}）" if self.letter else ("整行" if self.column == "-" else self.column)
        return f"第 {self.line} 行 {where}：{self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "column": self.column, "key": self.key, "letter": self.letter,
                "message": self.message, "text": str(self)}


@dataclass
class Record:
    """One data row: ``line`` and the cleaned values by canonical column (``""`` when absent)."""

    line: int
    values: dict[str, str]
    ok: bool = True  # False when a cell of this row was refused (the importer skips the row's checks)

    def __getitem__(self, key: str) -> str:
        return self.values.get(key, "")

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)


@dataclass
class Table:
    """A read file: ``records`` (rows to check further), ``errors`` so far, the ``encoding`` used
    (``UTF-8``, ``UTF-8（带BOM）``, ``GBK`` or ``GB18030``) and the header (canonical column → index)."""

    schema: Schema
    encoding: str = ""
    records: list[Record] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    columns: dict[str, int] = field(default_factory=dict)
    written: dict[str, str] = field(default_factory=dict)  # canonical → as written in the header
    #: The file could not be read far enough to check rows (encoding, empty, header).
    fatal: bool = False
    _seen: set[tuple[int, str]] = field(default_factory=set, repr=False)

    def has(self, key: str) -> bool:
        """Whether the file has this column."""
        return key in self.columns

    def error(self, line: int, key: str, message: str) -> None:
        """Record a problem with a cell (``key`` a canonical column, or ``-`` for the row). One problem per
        cell: a cell already reported (a control character, say) is not reported again by a later check."""
        if (line, key) in self._seen:
            return
        self._seen.add((line, key))
        if key == "-":
            self.errors.append(RowError(line, "-", message, "-", ""))
            return
        idx = self.columns.get(key)
        self.errors.append(RowError(line, self.written.get(key, key), message, key,
                                    column_letter(idx) if idx is not None else ""))

    def sorted_errors(self) -> list[RowError]:
        order = {c.name: i for i, c in enumerate(self.schema.columns)}
        return sorted(self.errors, key=lambda e: (e.line, order.get(e.key, -1 if e.key == "-" else 99)))


@dataclass
class PreviewRow:
    """What an import does (or would do) with one row: ``action`` is ``new``, ``updated``, ``unchanged``
    or ``skipped``; ``summary`` names the row (张三 13800000001 → 城关镇应急救援队); ``changes`` lists
    the columns that differ from the database for an update; ``note`` says why a row is skipped."""

    line: int
    action: str
    summary: str
    changes: list[str] = field(default_factory=list)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


ACTIONS = ("new", "updated", "unchanged", "skipped")
ACTION_ZH = {"new": "新增", "updated": "更新", "unchanged": "不变", "skipped": "跳过"}


@dataclass
class ImportReport:
    """The result of :func:`flows.imports.import_csv` — what a page or the CLI shows.

    ``errors`` non-empty: nothing was imported (fix the file and try again). Otherwise ``preview`` has
    one entry per data row, ``applied`` says whether the rows were written (False for a dry run), and
    ``details`` holds what the importer did besides (teams created, job alerts queued …)."""

    kind: str
    source: str
    encoding: str = ""
    errors: list[RowError] = field(default_factory=list)
    preview: list[PreviewRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    applied: bool = False
    dry_run: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(ACTIONS, 0)
        for p in self.preview:
            out[p.action] += 1
        return out

    def summary(self) -> str:
        """One line: 新增 3，更新 1，不变 10（UTF-8） or 2 处错误，未导入."""
        if self.errors:
            return f"{len(self.errors)} 处错误，没有导入任何数据。请改正后重新导入。"
        c = self.counts
        parts = [f"{ACTION_ZH[a]} {c[a]}" for a in ACTIONS if c[a] or a != "skipped"]
        head = "检查通过，将" if self.dry_run else "已导入："
        return f"{head}{'，'.join(parts)}（文件编码 {self.encoding}）" + ("。这是试运行，没有写入。" if self.dry_run else "")

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "encoding": self.encoding, "ok": self.ok,
                "applied": self.applied, "dry_run": self.dry_run, "counts": self.counts,
                "errors": [e.as_dict() for e in self.errors], "preview": [p.as_dict() for p in self.preview],
                "notes": list(self.notes), "details": dict(self.details)}


# --- decoding ----------------------------------------------------------------------------------------

ENC_UTF8, ENC_UTF8_BOM, ENC_GBK, ENC_GB18030 = "UTF-8", "UTF-8（带BOM）", "GBK", "GB18030"
SAVE_HINT = "请在 Excel 或 WPS 里用“另存为”，选“CSV UTF-8（逗号分隔）”后重新导入"


class DecodeError(ValueError):
    """The bytes are not text in an encoding we accept; ``line`` where reading failed (or None)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def _line_at(data: bytes, pos: int) -> int:
    return data.count(b"\n", 0, pos) + 1


def _plausible_chinese(text: str) -> bool:
    """False when a GBK/GB18030 decoding reads as nonsense: many kana, box-drawing, Cyrillic, Greek or
    bopomofo characters between the Chinese ones is what Big5 or Shift-JIS bytes look like as GBK."""
    odd = total = 0
    for ch in text:
        o = ord(ch)
        if o < 0x80:
            continue
        total += 1
        if (0x3040 <= o <= 0x30FF or 0x3100 <= o <= 0x312F or 0x2500 <= o <= 0x257F or 0x0370 <= o <= 0x04FF
                or 0xE000 <= o <= 0xF8FF or 0x31A0 <= o <= 0x31BF):
            odd += 1
    return odd < 3 or odd * 20 < total


def decode(data: bytes) -> tuple[str, str]:
    """``(text, encoding)`` of a CSV file's bytes; :class:`DecodeError` with a Chinese hint otherwise."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or (len(data) > 3 and data[1:4:2] == b"\x00\x00"):
        raise DecodeError("这是 UTF-16 编码的文件（Excel 的“Unicode 文本”），不是 CSV。" + SAVE_HINT)
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data[3:].decode("utf-8"), ENC_UTF8_BOM
        except UnicodeDecodeError as e:
            raise DecodeError(f"文件标明是 UTF-8，但第 {_line_at(data, e.start + 3)} 行有不是 UTF-8 的字节"
                              f"（文件被别的软件改坏了？）。{SAVE_HINT}", _line_at(data, e.start + 3)) from None
    try:
        return data.decode("utf-8"), ENC_UTF8
    except UnicodeDecodeError as e:
        utf8_line = gbk_line = _line_at(data, e.start)
    for codec, label in (("gbk", ENC_GBK), ("gb18030", ENC_GB18030)):
        try:
            text = data.decode(codec)
        except UnicodeDecodeError as e:
            gbk_line = _line_at(data, e.start)
            continue
        if not _plausible_chinese(text):
            raise DecodeError("文件不是 UTF-8，按 GBK 读出来是乱码（可能是繁体 Big5 或日文编码）。" + SAVE_HINT)
        return text, label
    line = max(utf8_line, gbk_line)
    raise DecodeError(f"文件既不是 UTF-8，也不是 GBK/GB18030 编码（第 {line} 行读不出来）。{SAVE_HINT}", line)


# --- header ------------------------------------------------------------------------------------------

_MARKS = re.compile(r"[*＊]|[(（](?:必填|选填|可选|可空|必须|非必填|可不填)[)）]")


def header_key(text: str) -> str:
    """How header names compare: NFKC (full-width → ASCII), lower case, no spaces / BOM / zero-width
    characters / ``_`` / ``-``, no ``*`` or ``（必填）`` marks."""
    t = unicodedata.normalize("NFKC", text or "").replace("\ufeff", "").replace("\u200b", "")
    t = _MARKS.sub("", t)
    return re.sub(r"[\s_\-]+", "", t).lower()


def column_letter(index: int) -> str:
    """0 → A, 25 → Z, 26 → AA: the column as Excel names it."""
    out = ""
    n = index + 1
    while n:
        n, r = divmod(n - 1, 26)
        out = chr(65 + r) + out
    return out


def _read_header(table: Table, names: list[str]) -> None:
    schema = table.schema
    lookup: dict[str, str] = {}
    for c in schema.columns:
        for n in (c.name, *c.aliases):
            lookup[header_key(n)] = c.name
    seen: dict[str, int] = {}
    for i, raw in enumerate(names):
        key = header_key(raw)
        shown = re.sub(r"[\x00-\x1f\x7f-\x9f\ufeff]", "", raw).strip()[:40] or f"第{i + 1}列"
        if not key:
            continue  # an empty header cell (Excel's trailing commas); a value under it is reported per row
        name = lookup.get(key)
        if name is None:
            near = difflib.get_close_matches(key, list(lookup), n=1, cutoff=0.6)
            hint = f"（您是不是想写 {lookup[near[0]]}？）" if near else ""
            table.errors.append(RowError(1, shown, f"不认识的列名{hint}。可用的列：{schema.describe()}",
                                         "", column_letter(i)))
            continue
        if name in seen:
            first = seen[name]
            table.errors.append(RowError(1, shown, f"和 {column_letter(first)} 列“{names[first].strip()}”是同一列，"
                                                   "请删掉其中一列", name, column_letter(i)))
            continue
        seen[name] = i
        table.columns[name] = i
        table.written[name] = shown
    for c in schema.columns:
        if c.required and c.name not in table.columns:
            alias = f"或“{c.aliases[0]}”" if c.aliases else ""
            table.errors.append(RowError(1, c.name, f"缺少这一列（{c.label}）：请在第一行加上列名“{c.name}”{alias}",
                                         c.name, ""))


# --- cells -------------------------------------------------------------------------------------------

#: Control characters (tab and line breaks aside) and the bidirectional overrides that make a text read
#: differently from what it is.
_BAD_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_INVISIBLE = str.maketrans("", "", "\ufeff\u200b")


def _bad_char(value: str) -> str | None:
    """A description of the first control character in ``value`` (never the value itself), or None."""
    m = _BAD_CHAR.search(value)
    if m is None:
        return None
    o = ord(m.group())
    if 0x202A <= o <= 0x2069:
        return f"含有改变文字方向的控制字符（U+{o:04X}），请删除后重新导入"
    what = "空字符（NUL）" if o == 0 else f"控制字符（U+{o:04X}）"
    return f"含有看不见的{what}，请删除后重新导入（常见于从别的系统复制来的内容）"


def clean_cell(value: str, multiline: bool) -> str:
    """Trimmed text of a cell without markup; single-line cells get whitespace runs collapsed."""
    v = value.translate(_INVISIBLE) if ("\ufeff" in value or "\u200b" in value) else value
    v = strip_markup(v)
    if multiline:
        v = v.replace("\r\n", "\n").replace("\r", "\n")
        v = "\n".join(line.strip() for line in v.split("\n"))
        return re.sub(r"\n{3,}", "\n\n", v).strip()
    return " ".join(v.split())


# --- reading -----------------------------------------------------------------------------------------


def read_csv(data: bytes | Path, schema: Schema) -> Table:
    """Read and check a CSV file against ``schema``. Never raises for what is in the file: every problem
    is in :attr:`Table.errors` (with :attr:`Table.fatal` when rows could not be read at all). A path that
    cannot be read raises OSError."""
    table = Table(schema)
    raw = data.read_bytes() if isinstance(data, Path) else bytes(data)
    try:
        text, table.encoding = decode(raw)
    except DecodeError as e:
        table.errors.append(RowError(e.line or 1, "-", str(e), "-"))
        table.fatal = True
        return table
    if not text.strip():
        table.errors.append(RowError(1, "-", f"文件是空的。第一行应是列名：{schema.header}", "-"))
        table.fatal = True
        return table
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except csv.Error:
        header = []
    _read_header(table, header)
    if table.errors:
        table.fatal = True
        return table
    width = len(header)
    unnamed = [i for i, h in enumerate(header) if not header_key(h)]
    cols = [(c, table.columns.get(c.name)) for c in schema.columns]
    line = 1
    while True:
        line += 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error:
            table.error(line, "-", "这一行读不出来：某个值以英文双引号开始却没有结束，或内容过长。"
                                   "请检查这一行的引号")
            break
        if not any(v.strip() for v in values):
            continue  # blank rows (Excel leaves them at the end)
        if len(values) > width and any(v.strip() for v in values[width:]):
            table.error(line, "-", f"有 {len(values)} 个值，但表头只有 {width} 列。值里有逗号时，"
                                   "请用英文双引号把整个值括起来（Excel 另存为 CSV 会自动这样做）")
            continue
        rec = Record(line, {})
        for i in unnamed:
            if i < len(values) and values[i].strip():
                table.error(line, "-", f"{column_letter(i)} 列没有列名却填了内容：请补上列名或删掉这一列")
                rec.ok = False
        for c, idx in cols:
            v = values[idx] if idx is not None and idx < len(values) else ""
            if v:
                bad = _bad_char(v)
                if bad:
                    table.error(line, c.name, bad)
                    rec.ok = False
                    continue
                v = clean_cell(v, c.multiline)
            if c.not_empty and not v:
                table.error(line, c.name, f"{c.label}不能为空")
                rec.ok = False
            elif c.max_len and len(v) > c.max_len:
                table.error(line, c.name, f"太长：{len(v)} 个字，最多 {c.max_len} 个字")
                rec.ok = False
            rec.values[c.name] = v
        table.records.append(rec)
    if text.count('"') % 2 and table.records:
        # An opening quote never closed: csv read everything after it, to the end, as one value.
        last = table.records[-1]
        table.error(last.line, "-", "这一行有一个英文双引号没有配对，从这里到文件末尾都被当成了一个值。"
                                    "请删掉多余的双引号，或把整个值用一对双引号括起来")
        last.ok = False
    return table
