"""What `vetbot teams import`, `vetbot martyrs import` and `vetbot jobs import` share: read the file,
run :func:`flows.imports.import_csv` in one transaction, print the problems or the result.

Problems go to stderr as ``FILE: line N, column X: <Chinese message>`` (every one of them, then one
summary line) with exit status 2; nothing is imported then. ``--dry-run`` prints what would change, row by
row; ``--json`` prints the whole report (the same data the staff console shows).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.commands.common import config_of, database, emit, run

#: Rows listed one by one in a dry run before the rest is summarised.
PREVIEW_LINES = 200


def add_import_args(p: argparse.ArgumentParser, *, dry_run_help: str = "check and show what would change; "
                                                                      "import nothing") -> None:
    """``FILE``, ``--dry-run`` and ``--json`` (the config option is added by the caller)."""
    p.add_argument("file", type=Path, help="the CSV file: UTF-8, UTF-8 with BOM, or GBK/GB18030 as Excel saves it")
    p.add_argument("--dry-run", action="store_true", help=dry_run_help)
    p.add_argument("--json", action="store_true", help="print the report as JSON (errors and per-row preview)")


def run_import(args: argparse.Namespace, kind: str, *, dry_run: bool,
               done: Callable[[Any], list[str]] | None = None, **options: Any) -> int:
    """Run one import from the command line; returns the exit status."""
    from bot.clock import SystemClock
    from flows.imports import ImportFailed, import_csv

    cfg = config_of(args)
    path: Path = args.file
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        print(f"vetbot: {path}: file not found", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"vetbot: {path}: cannot read ({e.strerror or e})", file=sys.stderr)
        return 2
    now = SystemClock().now()

    async def go() -> Any:
        from tqdm import tqdm

        bar = tqdm(desc="导入", unit="行", file=sys.stderr, disable=not sys.stderr.isatty() or args.json)
        try:
            async with database(cfg) as db, db.session() as s:
                return await import_csv(s, cfg, kind, data, now=now, source=path.name, dry_run=dry_run,
                                        progress=bar.update, **options)
        finally:
            bar.close()

    try:
        report = run(go())
    except ImportFailed as e:
        print(f"vetbot: {path}: {e}", file=sys.stderr)
        return 2
    if args.json:
        emit({**report.as_dict(), **report.counts, **report.details}, True, str)
        return 0 if report.ok else 2
    if not report.ok:
        for err in report.errors:
            print(f"{path}: {err}", file=sys.stderr)
        rows = len({e.line for e in report.errors})
        print(f"vetbot: {path}: {len(report.errors)} problem(s) in {rows} line(s), nothing imported "
              f"（共 {len(report.errors)} 处错误，没有导入任何数据；改正后重新导入）", file=sys.stderr)
        return 2
    c = report.counts
    counts = f"{c['new']} new, {c['updated']} updated, {c['unchanged']} unchanged" + (
        f", {c['skipped']} skipped" if c["skipped"] else "")
    lines: list[str] = []
    if dry_run:
        from bot.csvfile import ACTION_ZH

        shown = [p for p in report.preview if p.action != "unchanged"]
        for p in shown[:PREVIEW_LINES]:
            what = p.summary or p.note
            extra = f"（改动：{', '.join(p.changes)}）" if p.changes else (f"（{p.note}）" if p.note and p.summary else "")
            lines.append(f"line {p.line}: {ACTION_ZH[p.action]} {what}{extra}")
        if len(shown) > PREVIEW_LINES:
            lines.append(f"… and {len(shown) - PREVIEW_LINES} more (see --json)")
        lines.append(f"ok: {len(report.preview)} rows valid ({report.encoding}); dry run, nothing imported: {counts}")
    else:
        lines += report.notes
        lines.append(f"imported {len(report.preview)} rows from {path.name} ({report.encoding}): {counts}")
        if done is not None:
            lines += done(report)
    print("\n".join(lines))
    return 0
