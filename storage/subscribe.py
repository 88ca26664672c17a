"""订阅通知 consent: what each person allowed, per template, and how much of it is left.

WeChat lets an account send a 订阅通知 (``/cgi-bin/message/subscribe/bizsend``) only to a person who
accepted that template in a popup (a page's ``wx-open-subscribe`` button, or an article). A one-time
template allows one notice per acceptance; a long-term one (open to public services such as 政务民生)
allows many until the person turns it off. WeChat reports every choice as an event
(``subscribe_msg_popup_event``: accept/reject; ``subscribe_msg_change_event``: turned off;
``subscribe_msg_sent_event``: the delivery result); :mod:`flows.notices` records them here, inside the
turn's transaction. The outbox sender takes a notice's share of the consent atomically
(:func:`reserve`) before it sends, like it takes a customer-service slot, so two senders never spend one
one-time consent twice.

One row per (openid, template_id). Built so that pages bound to their person (OAuth) and SMS-only
members can be added without touching it: consent is keyed by openid alone, never by a link.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import DateTime, Integer, String, and_, case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base
from storage.db import Database
from storage.privacy import CONSENT, DELETE, Declaration, declare
from storage.sql import insert_ignore

ACCEPT, REJECT = "accept", "reject"
ONE_TIME, LONG_TERM = "one_time", "long_term"


class SubscribeConsent(Base):
    """One person's choice for one 订阅通知 template."""

    __tablename__ = "subscribe_consents"

    openid: Mapped[str] = mapped_column(String(64), primary_key=True)
    template_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # accept / reject (reject also after the person turned the template off, or WeChat answered 43101).
    status: Mapped[str] = mapped_column(String(16))
    # one_time / long_term, from templates.<purpose>.subscribe.kind when the choice was made.
    kind: Mapped[str] = mapped_column(String(16))
    # One-time templates: notices still allowed (one per acceptance). Unused for long-term ones.
    credits: Mapped[int] = mapped_column(Integer, default=0)
    # Where the choice was made: WeChat's PopupScene (1 = a web page, 2 = an article), or "change".
    scene: Mapped[str | None] = mapped_column(String(16))
    accepted_at: Mapped[datetime | None] = mapped_column(DateTime)
    rejected_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    # Notices sent on a one-time consent (a long-term one is not written to per notice: a call-up to a
    # thousand members would cost a thousand writes).
    sent_count: Mapped[int] = mapped_column(Integer, default=0)
    last_sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The last delivery result WeChat reported (subscribe_msg_sent_event ErrorStatus, or an errcode).
    last_result: Mapped[str | None] = mapped_column(String(64))


T = SubscribeConsent.__table__


@dataclass(frozen=True)
class Choice:
    """One entry of a popup or change event."""

    template_id: str
    status: str  # accept / reject


async def record_choices(session: AsyncSession, openid: str, choices: Sequence[Choice], now: datetime, *,
                         scene: str | None, kinds: Mapping[str, str]) -> int:
    """Record what a person chose in a popup (or turned off): in the caller's transaction.

    An acceptance of a one-time template adds one notice; of a long-term one, keeps them coming. A
    rejection ends both. ``kinds`` maps template ids to ``one_time``/``long_term`` (the config); an
    unknown template counts as one-time. Returns how many choices were recorded."""
    n = 0
    for c in choices:
        tid = c.template_id.strip()[:64]
        if not tid or c.status not in (ACCEPT, REJECT):
            continue
        kind = kinds.get(tid, ONE_TIME)
        await insert_ignore(session, T, {
            "openid": openid, "template_id": tid, "status": c.status, "kind": kind, "credits": 0,
            "scene": scene, "updated_at": now, "sent_count": 0,
        }, index_elements=["openid", "template_id"])
        where = and_(T.c.openid == openid, T.c.template_id == tid)
        if c.status == ACCEPT:
            values = {"status": ACCEPT, "kind": kind, "scene": scene, "accepted_at": now, "updated_at": now,
                      # one more notice for a one-time template; a long-term one needs no count
                      "credits": case((T.c.status == ACCEPT, T.c.credits + 1), else_=1) if kind == ONE_TIME else 0}
        else:
            values = {"status": REJECT, "scene": scene, "rejected_at": now, "updated_at": now, "credits": 0}
        await session.execute(update(T).where(where).values(**values),
                               execution_options={"synchronize_session": False})
        n += 1
    return n


async def record_result(session: AsyncSession, openid: str, template_id: str, result: str, now: datetime) -> None:
    """Keep the delivery result WeChat reported for a notice (subscribe_msg_sent_event)."""
    await session.execute(update(T).where(T.c.openid == openid, T.c.template_id == template_id[:64])
                          .values(last_result=result[:64], updated_at=now),
                          execution_options={"synchronize_session": False})


async def reserve(db: Database, openid: str, template_id: str, now: datetime) -> bool:
    """Take one notice's share of the person's consent, atomically; False when there is none.

    One ``UPDATE … WHERE status='accept' AND (long_term OR credits > 0)``: two senders racing for the
    last one-time notice cannot both win. Call :func:`release` when the notice then did not go out for
    a reason that will pass (a timeout), :func:`refused` when WeChat says there is no consent (43101)."""
    stmt = (update(T).where(T.c.openid == openid, T.c.template_id == template_id, T.c.status == ACCEPT,
                            or_(T.c.kind == LONG_TERM, T.c.credits > 0))
            .values(credits=case((T.c.kind == ONE_TIME, T.c.credits - 1), else_=T.c.credits),
                    sent_count=T.c.sent_count + 1, last_sent_at=now))
    async with db.session() as s:
        result = await s.execute(stmt, execution_options={"synchronize_session": False})
    return (result.rowcount or 0) == 1


async def release(db: Database, openid: str, template_id: str) -> None:
    """Give back what :func:`reserve` took (the notice was not sent; it will be tried again)."""
    stmt = (update(T).where(T.c.openid == openid, T.c.template_id == template_id, T.c.status == ACCEPT)
            .values(credits=case((T.c.kind == ONE_TIME, T.c.credits + 1), else_=T.c.credits),
                    sent_count=case((T.c.sent_count > 0, T.c.sent_count - 1), else_=0)))
    async with db.session() as s:
        await s.execute(stmt, execution_options={"synchronize_session": False})


async def refused(db: Database, openid: str, template_id: str, now: datetime, why: str = "43101") -> None:
    """WeChat answered that the person gave no consent (43101): our record was stale; stop using it."""
    stmt = (update(T).where(T.c.openid == openid, T.c.template_id == template_id)
            .values(status=REJECT, credits=0, rejected_at=now, updated_at=now, last_result=why[:64]))
    async with db.session() as s:
        await s.execute(stmt, execution_options={"synchronize_session": False})


async def accepted(session: AsyncSession, openid: str, template_ids: Iterable[str]) -> set[str]:
    """The templates among ``template_ids`` a notice can go out on to ``openid`` now."""
    ids = [t for t in template_ids if t]
    if not ids:
        return set()
    rows = await session.execute(select(T.c.template_id).where(
        T.c.openid == openid, T.c.template_id.in_(ids), T.c.status == ACCEPT,
        or_(T.c.kind == LONG_TERM, T.c.credits > 0)))
    return {r.template_id for r in rows}


async def consenting(session: AsyncSession, template_id: str) -> dict[str, str]:
    """Everyone a notice on ``template_id`` can go out to now, with the kind of their consent
    (``one_time`` / ``long_term``); the sender reads it once per fan-out."""
    rows = await session.execute(select(T.c.openid, T.c.kind).where(
        T.c.template_id == template_id, T.c.status == ACCEPT, or_(T.c.kind == LONG_TERM, T.c.credits > 0)))
    return {r.openid: r.kind for r in rows}


async def consents_of(session: AsyncSession, openid: str) -> list[SubscribeConsent]:
    """Every recorded choice of one person (staff views, tests)."""
    rows = await session.execute(select(SubscribeConsent).where(SubscribeConsent.openid == openid)
                                 .order_by(SubscribeConsent.template_id))
    return list(rows.scalars())


async def counts(session: AsyncSession) -> dict[str, dict[str, int]]:
    """People per template and status (``{template_id: {"accept": n, "reject": m}}``) for staff figures."""
    from sqlalchemy import func

    out: dict[str, dict[str, int]] = {}
    for tid, status, n in await session.execute(
            select(T.c.template_id, T.c.status, func.count()).group_by(T.c.template_id, T.c.status)):
        out.setdefault(tid, {})[status] = n
    return out


declare(Declaration(
    "subscribe_consents", label="订阅通知授权", purpose="您同意接收的微信订阅通知（集结、岗位、提醒）",
    basis=CONSENT, subject="openid", on_erase=DELETE,
    plain=("template_id", "status", "kind", "scene", "last_result"),
    kept="直到您在微信里关闭授权或注销", seen_by="仅系统使用"))
