"""CSV imports staff run — the volunteer roster, the martyr roll, job postings — as one service.

The CLI (``vetbot teams import``, ``vetbot martyrs import``, ``vetbot jobs import``) and the staff
console's upload page call the same function::

    report = await import_csv(session, config, "roster", data, now=now, source="名册.csv", dry_run=True)
    report.ok            # False: report.errors lists every problem (line, column, Chinese message)
    report.preview       # one PreviewRow per data row: new / updated (which columns) / unchanged / skipped
    report.counts        # {"new": 3, "updated": 1, "unchanged": 10, "skipped": 0}
    report.encoding      # UTF-8, UTF-8（带BOM）, GBK or GB18030
    report.as_dict()     # JSON for a page

``data`` is the file's bytes (an upload as it came). Order of work, all in the caller's transaction:
read and check the file (:mod:`bot.csvfile`: encoding, header, cells), check every row (the kind's
rules), check against the database (roster: an openid bound to someone else), build the preview; only
then, unless ``dry_run`` or any error, write. A failure while writing raises :class:`ImportFailed` (a
one-line Chinese message, no row data) and the caller's transaction rolls back: nothing is half-imported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from flows.api import ImportReport, PreviewRow, read_csv, to_local

#: The kinds of file, and what staff call them.
KINDS = {"roster": "应急队伍名册", "martyrs": "英烈名录", "jobs": "招聘岗位"}
#: Rows written per statement batch (and per progress step).
BATCH = 500

T = TypeVar("T")
Progress = Callable[[int], None]


class ImportFailed(Exception):
    """The database refused the write (the file was valid). The message names no row data."""


def _counting(items: Iterable[T], progress: Progress | None) -> Iterator[T]:
    for item in items:
        yield item
        if progress is not None:
            progress(1)


async def import_csv(session: AsyncSession, config: Any, kind: str, data: bytes, *, now: datetime, source: str = "",
                     dry_run: bool = False, default_source: str = "", skip_expired: bool = False,
                     notify: bool = True, progress: Progress | None = None) -> ImportReport:
    """Check (and unless ``dry_run`` import) one CSV file of ``kind`` (see :data:`KINDS`).

    ``source`` names the file in the report; jobs take ``default_source`` (the fair, for rows without a
    source), ``skip_expired`` (leave out rows past their deadline instead of refusing them) and ``notify``
    (queue alerts to subscribers). ``progress(n)`` is called as rows are written."""
    if kind not in KINDS:
        raise ValueError(f"unknown import kind {kind!r}; known: {', '.join(KINDS)}")
    report = ImportReport(kind=kind, source=source, dry_run=dry_run)
    try:
        if kind == "roster":
            await _roster(session, config, data, now, report, progress)
        elif kind == "martyrs":
            await _martyrs(session, config, data, now, report, progress)
        else:
            await _jobs(session, config, data, now, report, progress, default_source=default_source,
                        skip_expired=skip_expired, notify=notify)
    except SQLAlchemyError as e:
        # The exception's text carries the SQL parameters (names, phones): only its class goes out.
        orig = getattr(e, "orig", None) or e
        raise ImportFailed(f"数据库拒绝了这次导入（{type(orig).__name__}），没有导入任何数据。"
                           "请把文件和这条消息发给技术人员") from None
    return report


async def _roster(session: AsyncSession, config: Any, data: bytes, now: datetime, report: ImportReport,
                  progress: Progress | None) -> None:
    from flows.callup import roster

    table = read_csv(data, roster.SCHEMA)
    report.encoding = table.encoding
    rows = [] if table.fatal else roster.validate(table, config.callup.skills)
    if not table.errors:
        await roster.check_against_db(session, rows, table)
    report.errors = table.sorted_errors()
    if report.errors:
        return
    report.preview = await roster.plan(session, rows)
    if report.dry_run:
        return
    res = await roster.import_roster(session, rows, now, progress=lambda it: _counting(it, progress))
    report.applied = True
    report.details["teams_created"] = res.teams_created
    if res.teams_created:
        report.notes.append(f"新建队伍：{'、'.join(res.teams_created)}。队伍码和二维码场景："
                            "vetbot teams list / vetbot teams qr 队伍名")


async def _martyrs(session: AsyncSession, config: Any, data: bytes, now: datetime, report: ImportReport,
                   progress: Progress | None) -> None:
    from flows.memorial import roll
    from storage.memorial import upsert_martyrs

    table = read_csv(data, roll.SCHEMA)
    report.encoding = table.encoding
    rows = [] if table.fatal else roll.validate(table, to_local(now, config.bot.timezone).date())
    report.errors = table.sorted_errors()
    if report.errors:
        return
    report.preview = await roll.plan(session, rows)
    if report.dry_run:
        return
    for k in range(0, len(rows), BATCH):
        chunk = rows[k:k + BATCH]
        await upsert_martyrs(session, chunk, now)
        if progress is not None:
            progress(len(chunk))
    report.applied = True


async def _jobs(session: AsyncSession, config: Any, data: bytes, now: datetime, report: ImportReport,
                progress: Progress | None, *, default_source: str, skip_expired: bool, notify: bool) -> None:
    from flows.jobs import csvimport
    from flows.jobs.alerts import settings, store_postings

    tz = settings(config).tz
    table = read_csv(data, csvimport.SCHEMA)
    report.encoding = table.encoding
    result = csvimport.ReadResult(encoding=table.encoding)
    if not table.fatal:
        csvimport.validate(table, result, now=now, tz=tz, default_source=default_source, skip_expired=skip_expired)
    report.errors = table.sorted_errors()
    if report.errors:
        return
    preview = await csvimport.plan(session, result.rows, result.lines)
    preview += [PreviewRow(line, "skipped", "", note=f"和第 {first} 行是同一岗位（单位、岗位、地点相同）")
                for line, first in result.duplicates]
    preview += [PreviewRow(line, "skipped", "", note="截止日期已过") for line in result.expired]
    report.preview = sorted(preview, key=lambda p: p.line)
    report.notes += [f"第 {p.line} 行{p.note}，已跳过" for p in report.preview if p.action == "skipped"]
    if report.dry_run:
        return
    rep = await store_postings(session, result.rows, now, config, notify=notify, progress=progress)
    report.applied = True
    report.details.update({k: v for k, v in rep.as_dict().items() if k not in ("new", "updated", "unchanged")})
