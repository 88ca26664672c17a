"""The team roster CSV: validation of every row before anything is written, then the import.

Columns: ``team,name,phone,skills,township,openid`` (``openid`` may be left out or empty; optional
``leader`` marks the team leader with 是/1/y). Skills are separated by ``|``. UTF-8 (with or without
the BOM Excel writes) or GB18030 (Excel's default "CSV" on a Chinese Windows).
"""

from __future__ import annotations

import csv
import io
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.text import PHONE_RE, clean_phone
from storage.callup import Member, Team
from storage.models import User
from storage.sql import insert_ignore

REQUIRED = ("team", "name", "phone", "skills", "township")
OPTIONAL = ("openid", "leader")
NAME_RE = re.compile(r"^[\u4e00-\u9fffA-Za-z·•．. ]{2,20}$")
OPENID_RE = re.compile(r"^[A-Za-z0-9_-]{6,64}$")
YES = {"是", "1", "y", "yes", "true", "队长"}


class RosterError(Exception):
    """The file as a whole is unusable (encoding, header); ``problems`` lists bad rows otherwise."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


@dataclass
class RosterRow:
    line: int
    team: str
    name: str
    phone: str
    skills: list[str]
    township: str
    openid: str | None
    leader: bool = False


@dataclass
class ImportResult:
    teams_created: list[str] = field(default_factory=list)
    created: int = 0
    updated: int = 0
    unchanged: int = 0


def read_text(path: Path) -> str:
    """The file's text: UTF-8 (BOM or not), else GB18030; RosterError when neither."""
    raw = path.read_bytes()
    for enc in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    raise RosterError(f"{path}: not UTF-8 or GB18030 text (save the file as CSV UTF-8)")


def parse_roster(text: str, skills: list[str], source: str = "roster") -> list[RosterRow]:
    """Validate every row; raise RosterError listing ALL bad rows (line, column, what is wrong)."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise RosterError(f"{source}: the file is empty (expected a header: {','.join(REQUIRED)},openid)") from None
    cols = [h.strip().lower() for h in header]
    missing = [c for c in REQUIRED if c not in cols]
    unknown = [c for c in cols if c and c not in REQUIRED + OPTIONAL]
    dup = sorted({c for c in cols if c and cols.count(c) > 1})
    if missing or unknown or dup:
        parts = []
        if missing:
            parts.append(f"missing columns: {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown columns: {', '.join(unknown)}")
        if dup:
            parts.append(f"repeated columns: {', '.join(dup)}")
        raise RosterError(f"{source}: line 1: {'; '.join(parts)} (expected: {','.join(REQUIRED)},openid"
                          " — openid and leader are optional)")
    idx = {c: cols.index(c) for c in REQUIRED + OPTIONAL if c in cols}
    rows: list[RosterRow] = []
    problems: list[str] = []
    phones: dict[str, int] = {}
    openids: dict[str, int] = {}
    for line_no, rec in enumerate(reader, start=2):
        if not any(v.strip() for v in rec):
            continue  # blank lines (Excel leaves them at the end)
        if len(rec) > len(cols):
            problems.append(f"line {line_no}: {len(rec)} values but {len(cols)} columns (a comma inside a value? "
                            "quote it)")
            continue

        def get(col: str, rec: list[str] = rec) -> str:
            i = idx.get(col)
            return rec[i].strip() if i is not None and i < len(rec) else ""

        bad: list[str] = []
        team, name, township = get("team"), get("name"), get("township")
        if not team:
            bad.append("column team: empty")
        elif len(team) > 64:
            bad.append("column team: longer than 64 characters")
        if not NAME_RE.match(name):
            bad.append(f"column name: {name!r} is not a name (2-20 Chinese characters or letters)")
        phone = clean_phone(get("phone"))
        if not PHONE_RE.match(phone):
            bad.append(f"column phone: {get('phone')!r} is not an 11-digit mobile number")
        elif phone in phones:
            bad.append(f"column phone: {phone} already on line {phones[phone]}")
        else:
            phones[phone] = line_no
        sk = [s.strip() for s in re.split(r"[|｜]", get("skills")) if s.strip()]
        unknown_sk = [s for s in sk if s not in skills]
        if unknown_sk:
            bad.append(f"column skills: unknown {', '.join(unknown_sk)} (known: {'|'.join(skills)}; "
                       "separate with |)")
        if not township:
            bad.append("column township: empty")
        elif len(township) > 64:
            bad.append("column township: longer than 64 characters")
        openid = get("openid") or None
        if openid is not None:
            if not OPENID_RE.match(openid):
                bad.append(f"column openid: {openid!r} does not look like a WeChat openid")
            elif openid in openids:
                bad.append(f"column openid: already on line {openids[openid]}")
            else:
                openids[openid] = line_no
        leader = get("leader").lower() in YES
        if bad:
            problems.append(f"line {line_no}: " + "; ".join(bad))
            continue
        rows.append(RosterRow(line_no, team, name.replace(" ", ""), phone, list(dict.fromkeys(sk)), township,
                              openid, leader))
    if problems:
        raise RosterError(f"{source}: {len(problems)} bad row(s); nothing was imported", problems)
    if not rows:
        raise RosterError(f"{source}: no rows after the header")
    return rows


async def check_against_db(session: AsyncSession, rows: list[RosterRow]) -> list[str]:
    """Problems only the database can show: an openid already bound to another phone's member."""
    want = {r.openid: r for r in rows if r.openid}
    if not want:
        return []
    problems = []
    q = select(Member.openid, Member.phone).where(Member.openid.in_(list(want)))
    for openid, phone in (await session.execute(q)).all():
        r = want[openid]
        if phone != r.phone:
            problems.append(f"line {r.line}: column openid: already bound to the member with phone {phone}")
    return sorted(problems, key=lambda p: int(p.split(":")[0].split()[1]))


def new_code(taken: set[str]) -> str:
    """A 6-digit team code not in ``taken`` (members type it after 绑定)."""
    while True:
        code = f"{secrets.randbelow(900000) + 100000}"
        if code not in taken:
            taken.add(code)
            return code


async def import_roster(session: AsyncSession, rows: list[RosterRow], now: datetime,
                        progress: Callable[[Iterable[RosterRow]], Iterable[RosterRow]] = lambda x: x) -> ImportResult:
    """Create missing teams and upsert members by phone (never duplicates). An empty openid never
    removes an existing binding. Run after :func:`parse_roster` and :func:`check_against_db`."""
    res = ImportResult()
    teams = {t.name: t for t in (await session.execute(select(Team))).scalars()}
    codes = {t.code for t in teams.values()}
    for r in rows:
        if r.team not in teams:
            t = Team(name=r.team, township=r.township, code=new_code(codes), created_at=now)
            session.add(t)
            teams[r.team] = t
            res.teams_created.append(r.team)
    await session.flush()
    existing: dict[str, Member] = {}
    phones = [r.phone for r in rows]
    for i in range(0, len(phones), 1000):
        q = select(Member).where(Member.phone.in_(phones[i:i + 1000]))
        existing.update((m.phone, m) for m in (await session.execute(q)).scalars())
    for r in progress(rows):
        team = teams[r.team]
        if r.leader:
            team.leader, team.leader_phone = r.name, r.phone
        m = existing.get(r.phone)
        if m is None:
            session.add(Member(phone=r.phone, name=r.name, team_id=team.id, skills=r.skills, township=r.township,
                               openid=r.openid, bound_at=now if r.openid else None, created_at=now, updated_at=now))
            res.created += 1
            continue
        changed = (m.name, m.team_id, list(m.skills or []), m.township) != (r.name, team.id, r.skills, r.township)
        m.name, m.team_id, m.skills, m.township = r.name, team.id, r.skills, r.township
        if r.openid and m.openid != r.openid:
            m.openid, m.bound_at = r.openid, now
            changed = True
        if changed:
            m.updated_at = now
            res.updated += 1
        else:
            res.unchanged += 1
    await session.flush()
    await grant_volunteer(session, {r.openid: r.phone for r in rows if r.openid}, now)
    return res


async def grant_volunteer(session: AsyncSession, phones: dict[str, str], now: datetime) -> None:
    """Bound members get the ``volunteer`` role (their 1 / 2 / 3 answers route to the call-up) and,
    when the user has none, the roster's phone (the SMS fallback of the outbox uses it). An openid
    that never wrote to the account gets its users row now."""
    openids = list(phones)
    for i in range(0, len(openids), 500):
        chunk = openids[i:i + 500]
        await insert_ignore(session, User.__table__, [
            {"openid": o, "subscribed": True, "first_seen": now, "last_seen": now, "kefu_sent": 0,
             "roles": "volunteer", "phone": phones[o]} for o in chunk], index_elements=["openid"])
        for u in (await session.execute(select(User).where(User.openid.in_(chunk)))).scalars():
            if not u.has_role("volunteer"):
                u.add_role("volunteer")
            if not u.phone:
                u.phone = phones[u.openid]
