"""Job pages opened from pushes: one posting (instant alert) and all matches of a digest ("see all").

Links carry an opaque per-person token kept in the database (:class:`bot.links.JobLinks`, valid
``jobs.link_ttl_days``) and the posting or digest id in the query: ``/jobs/p/<token>?p=<id>``,
``/jobs/d/<token>?d=<id>``. The pages show postings, which are public; the buttons that pause or stop the
person's alerts (POST ``/jobs/s/<token>``) appear and work only for the person themself, as WeChat OAuth
tells (:mod:`bot.web.viewer`): a forwarded link shows the postings and changes nothing. An unknown link
gets 403, an expired one (and a signed link of earlier releases) or an ended posting 410, each with a
page saying what to do instead; nothing a visitor sends can cause a 500.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiohttp import web
from markupsafe import Markup
from sqlalchemy import update

from bot.links import JOBS_KIND
from bot.web import viewer
from bot.web.notices import subscribe_button
from bot.web.render import member
from flows.jobs.alerts import criteria_from_snapshot
from flows.jobs.matching import PostingView, matches, rank
from flows.jobs.texts import deadline_text, salary_text
from storage import linktokens
from storage.jobs import (
    ACTIVE,
    CANCELLED,
    PAUSED,
    active_postings_after,
    get_digest,
    get_postings,
    get_subscription,
    sent_before,
)
from storage.models import OutboxMessage

if TYPE_CHECKING:
    from bot.app import Runtime

#: Postings per page of a digest's "see all" list.
PAGE = 20
BROKEN = "这个链接无效或不完整。请从公众号消息里重新打开，或回复“找工作”。"
EXPIRED = "这个链接已过期。请在公众号里回复“找工作”查看最新岗位。"


def _problem(status: int, title: str, text: str) -> web.Response:
    return viewer.problem(status, title, text)


def _tel(contact: str) -> str | None:
    digits = "".join(ch for ch in contact if ch.isdigit() or ch == "-")
    plain = digits.replace("-", "")
    return plain if 7 <= len(plain) <= 12 else None


def _id(raw: str | None) -> int | None:
    return int(raw) if raw and re.fullmatch(r"[0-9]{1,9}", raw) else None


def _helpers() -> dict[str, Any]:
    return {"salary": lambda p: salary_text(p.salary_min, p.salary_max), "deadline": lambda p: deadline_text(p.deadline)}


def setup(app: web.Application, runtime: Runtime) -> None:
    """Add /jobs/p/{token} (a posting), /jobs/d/{token} (a digest) and POST /jobs/s/{token} (pause/stop)."""

    async def owner(request: web.Request) -> str | web.Response:
        token = request.match_info.get("token", "")
        if "." in token:  # a signed link of earlier releases (its claims named the person readably)
            return _problem(410, "链接已过期", EXPIRED)
        async with runtime.db.session() as s:
            try:
                row = await linktokens.resolve(s, token, JOBS_KIND, runtime.clock.now())
            except linktokens.LinkTokenError as e:
                if e.reason == "expired":
                    return _problem(410, "链接已过期", EXPIRED)
                return _problem(403, "链接无效", BROKEN)
        return row.openid

    async def manage_state(request: web.Request, openid: str, status: str | None) -> str | web.Response:
        """'active' / 'paused' (the buttons), 'elsewhere' (not known to be the person: a hint), or an
        OAuth redirect inside WeChat (silent) to learn whether the viewer is the person."""
        if status not in (ACTIVE, PAUSED):
            return ""
        seen = await viewer.current(runtime, request)
        if seen is None and viewer.in_wechat(request) and viewer.oauth_ready(runtime):
            return await viewer.start_oauth(runtime, request)
        return status if seen is not None and seen.openid == openid else "elsewhere"

    async def posting(request: web.Request) -> web.Response:
        openid = await owner(request)
        if isinstance(openid, web.Response):
            return openid
        pid = _id(request.query.get("p"))
        if pid is None:
            return _problem(403, "链接无效", BROKEN)
        now = runtime.clock.now()
        async with runtime.db.session() as s:
            p = (await get_postings(s, [pid])).get(pid)
            sub = await get_subscription(s, openid)
        if p is None:
            return _problem(404, "岗位不存在", "这个岗位已被撤下。请在公众号回复“找工作”查看其他岗位。")
        if p.expires_at is not None and p.expires_at <= now:
            return _problem(410, "岗位已截止", f"“{p.title}”已经截止报名。请在公众号回复“找工作”查看其他在招岗位。")
        manage = await manage_state(request, openid, sub.status if sub else None)
        if isinstance(manage, web.Response):
            return manage
        # 订阅通知 consent for job alerts, where WeChat can ask for it (bot/web/notices.py).
        button = Markup(await subscribe_button(request, runtime, ["job_alert"]))
        return member("member/job.html", request=request, title="岗位详情", p=p, tel=_tel(p.contact),
                      manage=manage, token=request.match_info["token"], subscribe=button, **_helpers())

    async def digest(request: web.Request) -> web.Response:
        openid = await owner(request)
        if isinstance(openid, web.Response):
            return openid
        did = _id(request.query.get("d"))
        if did is None:
            return _problem(403, "链接无效", BROKEN)
        raw_page = request.query.get("page", "1")
        page = int(raw_page) if re.fullmatch(r"[0-9]{1,4}", raw_page) and int(raw_page) > 0 else 1
        now = runtime.clock.now()
        async with runtime.db.session() as s:
            d = await get_digest(s, did)
            if d is None or d.openid != openid:
                return _problem(404, "找不到这份推荐", "这份岗位推荐已不存在。请在公众号回复“找工作”。")
            crit = criteria_from_snapshot(d.criteria)
            earlier = await sent_before(s, d.openid, d.after_id, d.upto_id, d.created_at)
            views = [(v, p) for p in await active_postings_after(s, d.after_id, d.upto_id, now)
                     if p.id not in earlier and matches(crit, v := PostingView.of(p))]
            sub = await get_subscription(s, openid)
        manage = await manage_state(request, openid, sub.status if sub else None)
        if isinstance(manage, web.Response):
            return manage
        views.sort(key=lambda t: rank(crit, t[0]), reverse=True)
        pages = max(1, (len(views) + PAGE - 1) // PAGE)
        page = min(page, pages)
        gone = max(0, d.total - len(views))
        token = request.match_info["token"]
        items = [(p, f"/jobs/p/{token}?p={p.id}") for _, p in views[(page - 1) * PAGE: page * PAGE]]
        head = f"{d.day.month}月{d.day.day}日为您找到 {d.total} 个岗位"
        head += f"，其中 {gone} 个已截止或已变更，未列出" if gone else ""
        head += f"（第 {page}/{pages} 页）。" if pages > 1 else "。"
        here = f"/jobs/d/{token}?d={did}"
        button = Markup(await subscribe_button(request, runtime, ["job_alert"]))
        return member("member/digest.html", request=request, title="为您推荐的岗位", head=head, items=items,
                      prev=f"{here}&page={page - 1}" if page > 1 else "",
                      next=f"{here}&page={page + 1}" if page < pages else "",
                      manage=manage, token=token, subscribe=button, **_helpers())

    async def manage(request: web.Request) -> web.Response:
        openid = await owner(request)
        if isinstance(openid, web.Response):
            return openid
        try:
            form = await request.post()
        except Exception:
            return _problem(400, "无法处理", "请求有误，请返回上一页重试。")
        action = form.get("action")
        if action not in ("pause", "unsubscribe"):
            return _problem(400, "无法处理", "请求有误，请返回上一页重试。")
        seen = await viewer.gate(runtime, request, viewer.Person(openid))
        if isinstance(seen, web.Response):
            return seen  # not the person (a forwarded link): nothing changes
        now = runtime.clock.now()
        async with runtime.db.session() as s:
            sub = await get_subscription(s, openid)
            if sub is None or sub.status == CANCELLED:
                return _problem(200, "已退订", "您已经退订了岗位推送，不会再收到招聘信息。")
            sub.status = PAUSED if action == "pause" else CANCELLED
            sub.next_digest_at, sub.updated_at = None, now
            await s.execute(
                update(OutboxMessage)
                .where(OutboxMessage.openid == openid, OutboxMessage.purpose == "job_alert",
                       OutboxMessage.status == "pending")
                .values(status="cancelled", last_error=f"job alerts {action} from the web page")
            )
        if action == "pause":
            return member("member/message.html", title="已暂停", kind="",
                          text="已暂停岗位推送，设置都保留着。想恢复时在公众号回复“恢复推送”。")
        return member("member/message.html", title="已退订", kind="",
                      text="已退订岗位推送，以后不会再收到招聘信息。想重新订阅请在公众号回复“订阅岗位”。")

    app.router.add_get("/jobs/p/{token}", posting)
    app.router.add_get("/jobs/d/{token}", digest)
    app.router.add_post("/jobs/s/{token}", manage)
