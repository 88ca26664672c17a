"""The audit trail of a call-up (events, answers, pushes with channel and result) and statistics.

Pushes are the outbox rows the call-up queued (``ref_type='callup'``): the sender records on them
the channel used, the result, attempts and the last error, so the trail shows what really happened.
Drills are kept out of the statistics (``stats(drills=True)`` shows them on their own).
"""

from __future__ import annotations

from statistics import median
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import fmt_local
from flows.callup.texts import ANSWER_WORDS, STATUS_WORDS
from storage.callup import CallUp, CallUpAnswer, CallUpEvent, CallUpTarget, Member, Team
from storage.models import OutboxMessage

_FMT = "%Y-%m-%d %H:%M:%S"


async def trail(session: AsyncSession, callup_id: int, tz: str) -> list[dict[str, Any]] | None:
    """Everything that happened to a call-up, oldest first; None when there is no such call-up."""
    if await session.get(CallUp, callup_id) is None:
        return None
    rows: list[dict[str, Any]] = []
    for e in (await session.execute(select(CallUpEvent).where(CallUpEvent.callup_id == callup_id))).scalars():
        rows.append({"at": e.at, "type": "event", "kind": e.kind, "actor": e.actor, "detail": e.detail})
    q = (select(CallUpAnswer, Member.name, Member.phone).join(Member, Member.id == CallUpAnswer.member_id)
         .where(CallUpAnswer.callup_id == callup_id))
    for a, name, phone in (await session.execute(q)).all():
        rows.append({"at": a.at, "type": "answer", "member_id": a.member_id, "name": name, "phone": phone,
                     "answer": a.answer, "recorded_as": a.recorded_as, "eta_min": a.eta_min, "via": a.via})
    q2 = select(OutboxMessage).where(OutboxMessage.ref_type == "callup", OutboxMessage.ref_id == callup_id)
    for o in (await session.execute(q2)).scalars():
        rows.append({"at": o.created_at, "type": "push", "openid": o.openid, "purpose": o.purpose,
                     "key": o.idempotency_key, "status": o.status, "channel": o.channel, "attempts": o.attempts,
                     "sent_at": o.sent_at, "last_error": o.last_error, "delivery_status": o.delivery_status})
    order = {"event": 0, "push": 1, "answer": 2}
    rows.sort(key=lambda r: (r["at"], order[r["type"]]))
    for r in rows:
        r["local"] = fmt_local(r["at"], tz, _FMT)
    return rows


def line(r: dict[str, Any]) -> str:
    """One human line of the trail."""
    if r["type"] == "event":
        detail = " ".join(f"{k}={v}" for k, v in (r["detail"] or {}).items())
        return f"{r['local']}  event   {r['kind']}{' by ' + r['actor'] if r['actor'] else ''}  {detail}"
    if r["type"] == "answer":
        eta = f" eta={r['eta_min']}min" if r["eta_min"] else ""
        return (f"{r['local']}  answer  {r['name']} {r['phone']}: {ANSWER_WORDS.get(r['answer'], r['answer'])}"
                f" -> {STATUS_WORDS.get(r['recorded_as'], r['recorded_as'])}{eta} via {r['via']}")
    err = f" error={r['last_error']}" if r["last_error"] else ""
    return (f"{r['local']}  push    {r['purpose']} -> {r['openid']}: {r['status']}"
            f" channel={r['channel'] or '-'} attempts={r['attempts']}{err}")


async def stats(session: AsyncSession, drills: bool = False) -> dict[str, Any]:
    """Response statistics over all call-ups that are (``drills``) or are not drills."""
    callups = list((await session.execute(select(CallUp).where(CallUp.drill.is_(drills)))).scalars())
    ids = [c.id for c in callups]
    out: dict[str, Any] = {"drills": drills, "callups": len(callups), "filled": 0, "median_fill_min": None,
                           "targets": 0, "answered": 0, "answer_rate": None, "median_answer_min": None,
                           "by_status": dict.fromkeys(STATUS_WORDS, 0), "by_team": []}
    if not ids:
        return out
    fills = [(c.filled_at - c.created_at).total_seconds() / 60 for c in callups if c.filled_at]
    out["filled"] = len(fills)
    out["median_fill_min"] = round(median(fills), 1) if fills else None
    for status, n in (await session.execute(select(CallUpTarget.status, func.count())
                                            .where(CallUpTarget.callup_id.in_(ids)).group_by(CallUpTarget.status))):
        out["by_status"][status] = int(n)
    out["targets"] = sum(out["by_status"].values())
    out["answered"] = out["targets"] - out["by_status"]["pending"]
    out["answer_rate"] = round(out["answered"] / out["targets"], 3) if out["targets"] else None
    first = (select(CallUpAnswer.callup_id, CallUpAnswer.member_id, func.min(CallUpAnswer.at).label("first"))
             .where(CallUpAnswer.callup_id.in_(ids)).group_by(CallUpAnswer.callup_id, CallUpAnswer.member_id)
             .subquery())
    q = (select(first.c.first, CallUpTarget.created_at).join(CallUpTarget, (CallUpTarget.callup_id == first.c.callup_id)
                                                             & (CallUpTarget.member_id == first.c.member_id)))
    delays = [(f - t).total_seconds() / 60 for f, t in (await session.execute(q)).all()]
    out["median_answer_min"] = round(median(delays), 1) if delays else None
    team_q = (select(Team.name, CallUpTarget.status, func.count()).join(Member, Member.id == CallUpTarget.member_id)
              .join(Team, Team.id == Member.team_id).where(CallUpTarget.callup_id.in_(ids))
              .group_by(Team.name, CallUpTarget.status))
    teams: dict[str, dict[str, int]] = {}
    for name, status, n in (await session.execute(team_q)).all():
        teams.setdefault(name, dict.fromkeys(STATUS_WORDS, 0))[status] = int(n)
    for name, st in sorted(teams.items()):
        total = sum(st.values())
        out["by_team"].append({"team": name, "targets": total, "answered": total - st["pending"],
                               "coming": st["confirmed"] + st["late"] + st["standby"],
                               "answer_rate": round((total - st["pending"]) / total, 3) if total else None})
    return out


def stats_text(s: dict[str, Any]) -> str:
    """Human form of :func:`stats`."""
    head = "演练统计" if s["drills"] else "集结统计（不含演练）"
    if not s["callups"]:
        return f"{head}：还没有{'演练' if s['drills'] else '集结'}。"
    def mins(v: float | None) -> str:
        return "-" if v is None else f"{v} 分钟"

    lines = [f"{head}：{s['callups']} 次，满员 {s['filled']} 次，满员用时中位数 {mins(s['median_fill_min'])}",
             f"通知 {s['targets']} 人次，回复 {s['answered']}（{(s['answer_rate'] or 0) * 100:.0f}%），"
             f"回复用时中位数 {mins(s['median_answer_min'])}",
             "按回复：" + "，".join(f"{STATUS_WORDS[k]} {v}" for k, v in s["by_status"].items())]
    for t in s["by_team"]:
        lines.append(f"  {t['team']}：{t['targets']} 人次，回复率 {(t['answer_rate'] or 0) * 100:.0f}%，"
                     f"响应到场 {t['coming']}")
    return "\n".join(lines)
