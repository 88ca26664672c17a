"""The audit trail of a call-up (events, answers, pushes with channel and result) and statistics.

Pushes are the outbox rows the call-up queued (``ref_type='callup'``): the sender records on them
the channel used, the result, attempts and the last error, so the trail shows what really happened.
Drills are kept out of the statistics (``stats(drills=True)`` shows them on their own).
"""

from __future__ import annotations

from statistics import median
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from flows.api import fmt_local
from flows.callup.texts import ANSWER_WORDS, STATUS_WORDS
from storage import callup as repo
from storage.callup import CallUp

_FMT = "%Y-%m-%d %H:%M:%S"


async def trail(session: AsyncSession, callup_id: int, tz: str) -> list[dict[str, Any]] | None:
    """Everything that happened to a call-up, oldest first; None when there is no such call-up."""
    if await session.get(CallUp, callup_id) is None:
        return None
    rows: list[dict[str, Any]] = []
    for e in await repo.events_of(session, callup_id):
        rows.append({"at": e.at, "type": "event", "kind": e.kind, "actor": e.actor, "detail": e.detail})
    for a, name, phone in await repo.answers_of(session, callup_id):
        rows.append({"at": a.at, "type": "answer", "member_id": a.member_id, "name": name, "phone": phone,
                     "answer": a.answer, "recorded_as": a.recorded_as, "eta_min": a.eta_min, "via": a.via})
    for o in await repo.pushes_of(session, callup_id):
        # An SMS to a member without WeChat has no openid: the trail names the phone (staff see phones).
        to = o.openid or f"SMS {(o.payload or {}).get('sms_to', '')}"
        rows.append({"at": o.created_at, "type": "push", "openid": to, "purpose": o.purpose,
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
    callups = await repo.callups_for_stats(session, drills)
    ids = [c.id for c in callups]
    out: dict[str, Any] = {"drills": drills, "callups": len(callups), "filled": 0, "median_fill_min": None,
                           "targets": 0, "answered": 0, "answer_rate": None, "median_answer_min": None,
                           "by_status": dict.fromkeys(STATUS_WORDS, 0), "by_team": []}
    if not ids:
        return out
    fills = [(c.filled_at - c.created_at).total_seconds() / 60 for c in callups if c.filled_at]
    out["filled"] = len(fills)
    out["median_fill_min"] = round(median(fills), 1) if fills else None
    out["by_status"].update(await repo.status_totals(session, ids))
    out["targets"] = sum(out["by_status"].values())
    out["answered"] = out["targets"] - out["by_status"]["pending"]
    out["answer_rate"] = round(out["answered"] / out["targets"], 3) if out["targets"] else None
    delays = await repo.first_answer_delays_min(session, ids)
    out["median_answer_min"] = round(median(delays), 1) if delays else None
    for name, by in sorted((await repo.team_status_counts(session, ids)).items()):
        st = {**dict.fromkeys(STATUS_WORDS, 0), **by}
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
