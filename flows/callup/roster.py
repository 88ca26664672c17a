"""The team roster CSV: validation of every row before anything is written, then the import.

Columns (any order; Chinese names work too): ``team,name,phone,skills,township`` and optional
``openid`` and ``leader`` (是/1/y marks the team leader). Skills are separated by ``|``. Reading,
encodings (UTF-8, UTF-8 with BOM, GBK/GB18030) and the header check are :mod:`bot.csvfile`'s; the
rules of a roster row are here. A re-import updates members by phone and never duplicates.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from flows.api import PHONE_RE, Column, PreviewRow, Schema, Table, clean_phone
from storage.callup import Member, Team
from storage.models import User
from storage.sql import insert_ignore

SCHEMA = Schema("名册", (
    Column("team", "队伍", required=True, not_empty=True, max_len=64,
           aliases=("队伍", "队名", "队伍名称", "所属队伍", "应急队伍", "救援队")),
    Column("name", "姓名", required=True, not_empty=True, max_len=20, aliases=("姓名", "名字", "队员", "队员姓名")),
    Column("phone", "手机号", required=True, not_empty=True, max_len=20,
           aliases=("手机", "手机号", "手机号码", "电话", "联系电话", "电话号码", "mobile")),
    Column("skills", "技能", required=True, max_len=200, aliases=("技能", "特长", "专长", "技能特长")),
    Column("township", "乡镇", required=True, not_empty=True, max_len=64,
           aliases=("乡镇", "乡镇街道", "所在乡镇", "街道", "镇")),
    Column("openid", "微信openid", max_len=64, aliases=("微信openid", "微信号openid")),
    Column("leader", "队长", max_len=8, aliases=("队长", "是否队长")),
))
REQUIRED = tuple(c.name for c in SCHEMA.columns if c.required)
OPTIONAL = tuple(c.name for c in SCHEMA.columns if not c.required)
NAME_RE = re.compile(r"^[\u4e00-\u9fffA-Za-z·•．. ]{2,20}$")
OPENID_RE = re.compile(r"^[A-Za-z0-9_-]{6,64}$")
YES = {"是", "1", "y", "yes", "true", "队长", "√", "✓"}
NO = {"", "否", "0", "n", "no", "false", "不是", "×"}


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


def _quote(v: str) -> str:
    return f"“{v[:20]}{'…' if len(v) > 20 else ''}”"


def validate(table: Table, skills: list[str]) -> list[RosterRow]:
    """The roster rows of a read file; every problem goes to ``table.errors`` (line, column, Chinese)."""
    rows: list[RosterRow] = []
    phones: dict[str, int] = {}
    openids: dict[str, int] = {}
    for rec in table.records:
        line = rec.line
        before = len(table.errors)
        name = rec["name"]
        if name and not NAME_RE.match(name):
            table.error(line, "name", f"{_quote(name)}不像姓名（2-20 个汉字或字母）")
        raw_phone = rec["phone"]
        phone = clean_phone(raw_phone)
        if raw_phone and not PHONE_RE.match(phone):
            table.error(line, "phone", f"{_quote(raw_phone)}不是 11 位手机号")
        elif phone in phones:
            table.error(line, "phone", f"和第 {phones[phone]} 行的手机号重复（同一个人只写一行）")
        elif phone:
            phones[phone] = line
        sk = [s.strip() for s in re.split(r"[|｜/、,，;；]", rec["skills"]) if s.strip()]
        unknown = [s for s in sk if s not in skills]
        if unknown:
            table.error(line, "skills", f"不认识的技能：{'、'.join(unknown)}（可填：{'|'.join(skills)}；"
                                        "多个技能用 | 隔开）")
        openid = rec["openid"] or None
        if openid is not None:
            if not OPENID_RE.match(openid):
                table.error(line, "openid", "不像微信 openid（6-64 个字母、数字、_ 或 -）；不知道可以留空")
            elif openid in openids:
                table.error(line, "openid", f"和第 {openids[openid]} 行的 openid 重复")
            else:
                openids[openid] = line
        leader = rec["leader"].lower()
        if leader not in YES and leader not in NO:
            table.error(line, "leader", f"{_quote(rec['leader'])}：队长请填“是”，不是队长留空")
        if len(table.errors) > before or not rec.ok:
            continue
        rows.append(RosterRow(line, rec["team"], name.replace(" ", ""), phone, list(dict.fromkeys(sk)),
                              rec["township"], openid, leader in YES))
    if not table.errors and not rows:
        table.error(2, "-", "没有数据：第一行列名下面至少要有一行队员")
    return rows


async def check_against_db(session: AsyncSession, rows: list[RosterRow], table: Table) -> None:
    """Problems only the database can show: an openid already bound to the member of another phone."""
    want = {r.openid: r for r in rows if r.openid}
    if not want:
        return
    q = select(Member.openid, Member.phone).where(Member.openid.in_(list(want)))
    for openid, phone in (await session.execute(q)).all():
        r = want[openid]
        if phone != r.phone:
            table.error(r.line, "openid", f"这个 openid 已绑定在手机号尾号 {phone[-4:]} 的队员上")


def _summary(r: RosterRow) -> str:
    return f"{r.name} {r.phone}（{r.team}）" + ("，队长" if r.leader else "")


async def plan(session: AsyncSession, rows: list[RosterRow]) -> list[PreviewRow]:
    """What :func:`import_roster` would do with each row (new / updated with the changed columns /
    unchanged), without writing: the dry run and the console's preview."""
    teams = {t.id: t for t in (await session.execute(select(Team))).scalars()}
    existing = await _members_by_phone(session, [r.phone for r in rows])
    out = []
    for r in rows:
        m = existing.get(r.phone)
        if m is None:
            out.append(PreviewRow(r.line, "new", _summary(r)))
            continue
        team = teams.get(m.team_id)
        changes = _changes(m, r, team.name if team else None, team)
        out.append(PreviewRow(r.line, "updated" if changes else "unchanged", _summary(r), changes))
    return out


def _changes(m: Member, r: RosterRow, team_name: str | None, team: Team | None) -> list[str]:
    changes = [label for label, old, new in (
        ("name", m.name, r.name), ("team", team_name, r.team), ("skills", list(m.skills or []), r.skills),
        ("township", m.township, r.township)) if old != new]
    if r.openid and m.openid != r.openid:
        changes.append("openid")
    if r.leader and (team is None or team.name != r.team or team.leader_phone != r.phone):
        changes.append("leader")
    return changes


async def _members_by_phone(session: AsyncSession, phones: list[str]) -> dict[str, Member]:
    existing: dict[str, Member] = {}
    for i in range(0, len(phones), 1000):
        q = select(Member).where(Member.phone.in_(phones[i:i + 1000]))
        existing.update((m.phone, m) for m in (await session.execute(q)).scalars())
    return existing


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
    removes an existing binding. Run after :func:`validate` and :func:`check_against_db`."""
    res = ImportResult()
    teams = {t.name: t for t in (await session.execute(select(Team))).scalars()}
    by_id = {t.id: t for t in teams.values()}
    codes = {t.code for t in teams.values()}
    for r in rows:
        if r.team not in teams:
            t = Team(name=r.team, township=r.township, code=new_code(codes), created_at=now)
            session.add(t)
            teams[r.team] = t
            res.teams_created.append(r.team)
    await session.flush()
    existing = await _members_by_phone(session, [r.phone for r in rows])
    for r in progress(rows):
        team = teams[r.team]
        m = existing.get(r.phone)
        old_team = by_id.get(m.team_id) if m is not None else None
        changed = bool(m is not None and _changes(m, r, old_team.name if old_team else None, old_team))
        if r.leader:
            team.leader, team.leader_phone = r.name, r.phone
        if m is None:
            session.add(Member(phone=r.phone, name=r.name, team_id=team.id, skills=r.skills, township=r.township,
                               openid=r.openid, bound_at=now if r.openid else None, created_at=now, updated_at=now))
            res.created += 1
            continue
        m.name, m.team_id, m.skills, m.township = r.name, team.id, r.skills, r.township
        if r.openid and m.openid != r.openid:
            m.openid, m.bound_at = r.openid, now
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
