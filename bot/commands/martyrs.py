"""`vetbot martyrs`: import and list the martyr roll (英烈名录).

    vetbot martyrs import -c vetbot.yaml roll.csv            # validate every row, then insert/update
    vetbot martyrs import -c vetbot.yaml roll.csv --dry-run  # validate, show what would change
    vetbot martyrs list -c vetbot.yaml [--query 张] [--json]

The CSV schema and the natural key (how a re-import updates instead of duplicating) are documented in
:mod:`flows.memorial.roll`.
"""

from __future__ import annotations

import argparse
from typing import Any

from bot.commands.common import add_config, config_of, database, emit, run
from bot.commands.imports import add_import_args, run_import


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("martyrs", help="英烈名录：导入 CSV、查看", description="The martyr roll (英烈名录).")
    psub = p.add_subparsers(dest="martyrs_cmd", required=True)
    i = psub.add_parser("import", help="import a CSV (validates every row first; re-import updates)",
                        description="Import name,gender,hometown,born,died,unit,place_of_death,burial,biography "
                                    "[,photo_url][,key] (any order; Chinese names too: 姓名,性别,籍贯,出生,牺牲,"
                                    "所属部队,牺牲地点,安葬地,事迹简介,照片,编号); UTF-8, UTF-8 with BOM or GBK/"
                                    "GB18030. Every row is validated first and every problem listed as 'line N, "
                                    "column X: …'; any bad row and nothing is imported. A record already present "
                                    "(same key, or same name+gender+hometown+born+died) is updated, never "
                                    "duplicated. HTML in a field is dropped (its text kept).")
    add_config(i)
    add_import_args(i)
    i.add_argument("--check", action="store_true", help="the same as --dry-run")
    i.set_defaults(func=_import)
    ls = psub.add_parser("list", help="list records (search like the chat does)")
    add_config(ls)
    ls.add_argument("--query", "-q", default="", help="name, pinyin initials, hometown or unit")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)


def _import(args: argparse.Namespace) -> int:
    return run_import(args, "martyrs", dry_run=args.dry_run or args.check)


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
