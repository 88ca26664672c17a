"""`vetbot martyrs`: import and list the martyr roll (英烈名录).

    vetbot martyrs import -c vetbot.yaml roll.csv            # validate every row, then insert/update
    vetbot martyrs import -c vetbot.yaml roll.csv --check    # validate only
    vetbot martyrs list -c vetbot.yaml [--query 张] [--json]

The CSV schema and the natural key (how a re-import updates instead of duplicating) are documented in
:mod:`flows.memorial.roll`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bot.commands.common import add_config, config_of, database, emit, run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("martyrs", help="英烈名录：导入 CSV、查看", description="The martyr roll (英烈名录).")
    psub = p.add_subparsers(dest="martyrs_cmd", required=True)
    i = psub.add_parser("import", help="import a CSV (validates every row first; re-import updates)",
                        description="Import name,gender,hometown,born,died,unit,place_of_death,burial,biography "
                                    "[,photo_url][,key]. Every row is validated first; any bad row and nothing is "
                                    "imported. A record already present (same key, or same name+gender+hometown+"
                                    "born+died) is updated, never duplicated.")
    add_config(i)
    i.add_argument("file", type=Path)
    i.add_argument("--check", action="store_true", help="validate only, import nothing")
    i.set_defaults(func=_import)
    ls = psub.add_parser("list", help="list records (search like the chat does)")
    add_config(ls)
    ls.add_argument("--query", "-q", default="", help="name, pinyin initials, hometown or unit")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)


def _import(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from bot.clock import SystemClock
    from flows.memorial.roll import RollError, read_roll
    from storage.memorial import upsert_martyrs

    cfg = config_of(args)
    try:
        roll = read_roll(args.file)
    except RollError as e:
        print(f"vetbot: {args.file}: {e}", file=sys.stderr)
        return 2
    if roll.errors:
        for err in roll.errors:
            print(f"{args.file}: {err}", file=sys.stderr)
        print(f"vetbot: {len(roll.errors)} problem(s) in {args.file}; nothing imported (fix them and run again)",
              file=sys.stderr)
        return 2
    if args.check:
        print(f"ok: {len(roll.rows)} records valid ({roll.encoding}); nothing imported (--check)")
        return 0

    async def go() -> tuple[int, int]:
        now = SystemClock().now()
        inserted = updated = 0
        batch = 500
        async with database(cfg) as db, db.session() as s:  # one transaction: all or nothing
            with tqdm(total=len(roll.rows), unit="rec", desc="importing", file=sys.stderr,
                      disable=not sys.stderr.isatty()) as bar:
                for k in range(0, len(roll.rows), batch):
                    chunk = roll.rows[k:k + batch]
                    a, b = await upsert_martyrs(s, chunk, now)
                    inserted, updated = inserted + a, updated + b
                    bar.update(len(chunk))
        return inserted, updated

    inserted, updated = run(go())
    print(f"imported {len(roll.rows)} records from {args.file}: {inserted} new, {updated} updated")
    return 0


def _list(args: argparse.Namespace) -> int:
    from flows.memorial.names import is_letters
    from flows.memorial.texts import fmt_partial
    from storage.memorial import Martyr, search_martyrs

    cfg = config_of(args)

    async def go() -> tuple[int, list[dict[str, Any]]]:
        from sqlalchemy import func, select

        async with database(cfg) as db, db.session() as s:
            q = args.query.strip().lower()
            if q:
                total, rows = await search_martyrs(s, q, letters=is_letters(q), limit=args.limit)
            else:
                total = (await s.execute(select(func.count()).select_from(Martyr))).scalar_one()
                rows = list((await s.execute(select(Martyr).order_by(Martyr.id).limit(args.limit))).scalars())
            return int(total), [{"id": m.id, "name": m.name, "gender": m.gender, "hometown": m.hometown,
                                 "born": m.born, "died": m.died, "unit": m.unit, "burial": m.burial} for m in rows]

    total, rows = run(go())
    if args.json:
        emit({"total": total, "records": rows}, True, str)
        return 0
    for r in rows:
        print(f"#{r['id']}\t{r['name']}\t{r['gender'] or '-'}\t{r['hometown'] or '-'}"
              f"\t{fmt_partial(r['born']) or '?'}—{fmt_partial(r['died']) or '?'}\t{r['unit'] or '-'}")
    print(f"{total} record(s)" + (f", first {len(rows)} shown" if total > len(rows) else ""))
    return 0
