"""寄语审核: the pending 寄语, approved or rejected one by one or in bulk (checkboxes), with a reason for
rejections. Each decision goes through :func:`flows.memorial.review.review_message` — the service
``vetbot memorial review`` uses — which tells the author (kindly, for a rejection) and writes the audit log.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select

from bot.web.console.base import Console, field, form, int_or_none, see_other, staff_of
from flows.memorial.review import NotPending, review_message
from flows.memorial.texts import target_name
from storage.memorial import APPROVED, PENDING, REJECTED, Martyr, MemorialMessage
from storage.models import User

#: Reasons offered for a rejection (staff may write their own).
REASONS = ("含有广告或联系方式", "言辞不当", "与缅怀英烈无关", "内容重复")
LIMIT = 100


async def _names(s: Any, msgs: list[MemorialMessage]) -> tuple[dict[int, str], dict[str, str]]:
    ids = {m.martyr_id for m in msgs if m.martyr_id}
    martyrs = dict((await s.execute(select(Martyr.id, Martyr.name).where(Martyr.id.in_(ids)))).all()) if ids else {}
    openids = {m.openid for m in msgs}
    users = dict((await s.execute(select(User.openid, User.name).where(User.openid.in_(openids)))).all()) \
        if openids else {}
    return martyrs, {k: v for k, v in users.items() if v}


def routes(app: web.Application, c: Console) -> None:
    async def queue(request: web.Request) -> web.Response:
        async with c.db.session() as s:
            pending = list((await s.execute(select(MemorialMessage).where(MemorialMessage.status == PENDING)
                                            .order_by(MemorialMessage.id).limit(LIMIT))).scalars())
            decided = list((await s.execute(select(MemorialMessage).where(
                MemorialMessage.status.in_((APPROVED, REJECTED)), MemorialMessage.preset.is_(False),
                MemorialMessage.decided_by != "filter").order_by(MemorialMessage.decided_at.desc(),
                                                                 MemorialMessage.id.desc()).limit(15))).scalars())
            martyrs, authors = await _names(s, pending + decided)

        def target(m: MemorialMessage) -> str:
            return target_name(martyrs.get(m.martyr_id)) if m.martyr_id else "全体英烈"

        q = request.query
        return c.page(request, "console/moderation.html", title="寄语审核", pending=pending, decided=decided,
                      target=target, authors=authors, reasons=REASONS, limit=LIMIT,
                      done={k: int_or_none(q.get(k, "")) or 0 for k in ("a", "r", "s")} if "a" in q else None)

    async def decide(request: web.Request) -> web.Response:
        data = await form(request)
        action = field(data, "action")
        ids = sorted({i for i in (int_or_none(x) for x in data.getall("ids", []) if isinstance(x, str))
                      if i is not None})
        reason = field(data, "reason_text", 100) or field(data, "reason", 100)
        if action not in ("approve", "reject") or not ids:
            return c.message(request, 400, "没有选择", "请先勾选要审核的寄语，再点“通过所选”或“不通过所选”。",
                             back="/staff/memorial")
        if action == "reject" and not reason:
            return c.message(request, 400, "请写原因", "不通过时请选择或填写原因（会委婉地告诉作者）。", back="/staff/memorial")
        staff = staff_of(request)
        done = skipped = 0
        for mid in ids:  # one transaction each: a message decided meanwhile by someone else skips alone
            try:
                async with c.db.session() as s:
                    await review_message(s, c.cfg, mid, action == "approve", by=staff.openid, now=c.now(),
                                         reason=reason if action == "reject" else "", via="console")
                done += 1
            except NotPending:
                skipped += 1
        a, r = (done, 0) if action == "approve" else (0, done)
        return see_other(f"/staff/memorial?a={a}&r={r}&s={skipped}")

    app.router.add_get("/staff/memorial", queue)
    app.router.add_post("/staff/memorial/decide", decide)
