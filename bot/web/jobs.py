"""Job pages opened from pushes: one posting (instant alert) and all matches of a digest ("see all").

Links are HMAC-signed per user and expire after ``jobs.link_ttl_days`` (see
:func:`flows.jobs.alerts.posting_link`). A bad link gets 403, an expired link or an ended posting 410,
each with a page saying what to do instead; nothing a visitor sends can cause a 500. Both pages carry
POST buttons (no JavaScript) to pause or stop the alerts.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import update

from bot.links import LinkError, verify
from bot.web import stylesheet
from bot.web.notices import subscribe_button
from flows.jobs.alerts import criteria_from_snapshot, epoch_of, posting_path
from flows.jobs.matching import PostingView, matches, rank
from flows.jobs.texts import deadline_text, salary_text
from storage.jobs import (
    ACTIVE,
    CANCELLED,
    PAUSED,
    JobPosting,
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

CSS = """
body{margin:0;font-family:-apple-system,"PingFang SC","Microsoft YaHei",sans-serif;font-size:19px;line-height:1.6;
background:#f4f5f7;color:#1d1d1f}
header{background:#b71c1c;color:#fff;padding:14px 16px;font-size:21px;font-weight:600}
main{padding:12px;max-width:640px;margin:0 auto}
.card{background:#fff;border-radius:10px;padding:14px 16px;margin:0 0 12px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
.card h2{margin:0 0 6px;font-size:21px}
.row{margin:2px 0}.k{color:#666}
.pay{color:#c62828;font-weight:600}
.vp{display:inline-block;background:#fff3e0;color:#e65100;border-radius:6px;padding:0 8px;font-size:16px}
a.item{display:block;color:inherit;text-decoration:none}
a.btn,button{display:block;width:100%;box-sizing:border-box;text-align:center;font-size:20px;padding:14px;
border-radius:10px;border:0;margin:10px 0;text-decoration:none}
a.call{background:#2e7d32;color:#fff}
a.pause{background:#eceff1;color:#37474f}
button.pause{background:#eceff1;color:#37474f}
button.stop{background:#fff;color:#b71c1c;border:1px solid #b71c1c}
.note{color:#666;font-size:16px}
.privacy{text-align:center;font-size:15px}
"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    doc = (f'<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width,initial-scale=1">'
           f"<title>{html.escape(title)}</title>{stylesheet(__name__, CSS)}</head>"
           f"<body><header>{html.escape(title)}</header><main>{body}</main>"
           '<p class=privacy><a href="/privacy">个人信息保护提示</a></p></body></html>')
    return web.Response(text=doc, status=status, content_type="text/html", charset="utf-8")


def _problem(status: int, title: str, text: str) -> web.Response:
    return _page(title, f'<div class="card"><p>{html.escape(text)}</p></div>', status)


def _claims(runtime: Runtime, request: web.Request, kind: str | None) -> dict[str, Any] | web.Response:
    token = request.match_info.get("token", "")
    try:
        claims = verify(runtime.config, token, now=epoch_of(runtime.clock.now()))
    except LinkError as e:
        if e.reason == "expired":
            return _problem(410, "链接已过期", "这个链接已过期。请在公众号里回复“找工作”查看最新岗位。")
        return _problem(403, "链接无效", "这个链接无效或不完整。请从公众号消息里重新打开，或回复“找工作”。")
    ok_kind = claims.get("k") in (("jp", "jd") if kind is None else (kind,))
    if not ok_kind or not isinstance(claims.get("u"), str):
        return _problem(403, "链接无效", "这个链接无效或不完整。请从公众号消息里重新打开，或回复“找工作”。")
    return claims


def _tel(contact: str) -> str | None:
    digits = "".join(ch for ch in contact if ch.isdigit() or ch == "-")
    plain = digits.replace("-", "")
    return plain if 7 <= len(plain) <= 12 else None


def _detail(p: JobPosting) -> str:
    e = html.escape
    vp = ' <span class="vp">退役军人优先</span>' if p.veteran_priority else ""
    rows = [
        f"<h2>{e(p.title)}{vp}</h2>",
        f'<div class="row"><span class="k">单位：</span>{e(p.company)}</div>',
        f'<div class="row"><span class="k">地点：</span>{e(p.location)}</div>',
        f'<div class="row"><span class="k">月薪：</span><span class="pay">{e(salary_text(p.salary_min, p.salary_max))}</span></div>',
        f'<div class="row"><span class="k">类型：</span>{e(p.job_type)}</div>',
    ]
    if p.requirements:
        rows.append(f'<div class="row"><span class="k">要求：</span>{e(p.requirements)}</div>')
    rows += [
        f'<div class="row"><span class="k">联系：</span>{e(p.contact)}</div>',
        f'<div class="row"><span class="k">截止：</span>{e(deadline_text(p.deadline))}</div>',
    ]
    if p.source:
        rows.append(f'<div class="row note">来源：{e(p.source)}</div>')
    tel = _tel(p.contact)
    call = f'<a class="btn call" href="tel:{e(tel)}">拨打电话 {e(tel)}</a>' if tel else ""
    return f'<div class="card">{"".join(rows)}{call}</div>'


def _manage_form(token: str, status: str | None) -> str:
    if status not in (ACTIVE, PAUSED):
        return ""
    t = html.escape(token)
    pause = ('<button class="pause" name="action" value="pause">暂停岗位推送</button>' if status == ACTIVE
             else '<p class="note">岗位推送已暂停。在公众号回复“恢复推送”即可恢复。</p>')
    return (f'<form method="post" action="/jobs/s/{t}" class="card"><p class="note">不想再收到岗位推送？</p>'
            f'{pause}<button class="stop" name="action" value="unsubscribe">退订岗位推送</button></form>')


def setup(app: web.Application, runtime: Runtime) -> None:
    """Add /jobs/p/{token} (a posting), /jobs/d/{token} (a digest) and POST /jobs/s/{token} (pause/stop)."""

    async def posting(request: web.Request) -> web.Response:
        claims = _claims(runtime, request, "jp")
        if isinstance(claims, web.Response):
            return claims
        pid = claims.get("p")
        if not isinstance(pid, int):
            return _problem(403, "链接无效", "这个链接无效或不完整。")
        now = runtime.clock.now()
        async with runtime.db.session() as s:
            p = (await get_postings(s, [pid])).get(pid)
            sub = await get_subscription(s, claims["u"])
            status = sub.status if sub else None
        if p is None:
            return _problem(404, "岗位不存在", "这个岗位已被撤下。请在公众号回复“找工作”查看其他岗位。")
        if p.expires_at is not None and p.expires_at <= now:
            return _problem(410, "岗位已截止", f"“{p.title}”已经截止报名。请在公众号回复“找工作”查看其他在招岗位。")
        # 订阅通知 consent for job alerts, where WeChat can ask for it (bot/web/notices.py).
        return _page("岗位详情", _detail(p) + _manage_form(request.match_info["token"], status)
                     + await subscribe_button(request, runtime, ["job_alert"]))

    async def digest(request: web.Request) -> web.Response:
        claims = _claims(runtime, request, "jd")
        if isinstance(claims, web.Response):
            return claims
        did = claims.get("d")
        if not isinstance(did, int):
            return _problem(403, "链接无效", "这个链接无效或不完整。")
        raw_page = request.query.get("page", "1")
        page = int(raw_page) if re.fullmatch(r"[0-9]{1,4}", raw_page) and int(raw_page) > 0 else 1
        now = runtime.clock.now()
        async with runtime.db.session() as s:
            d = await get_digest(s, did)
            if d is None or d.openid != claims["u"]:
                return _problem(404, "找不到这份推荐", "这份岗位推荐已不存在。请在公众号回复“找工作”。")
            crit = criteria_from_snapshot(d.criteria)
            earlier = await sent_before(s, d.openid, d.after_id, d.upto_id, d.created_at)
            views = [(v, p) for p in await active_postings_after(s, d.after_id, d.upto_id, now)
                     if p.id not in earlier and matches(crit, v := PostingView.of(p))]
            sub = await get_subscription(s, claims["u"])
            status = sub.status if sub else None
        views.sort(key=lambda t: rank(crit, t[0]), reverse=True)
        pages = max(1, (len(views) + PAGE - 1) // PAGE)
        page = min(page, pages)
        gone = max(0, d.total - len(views))
        e = html.escape
        items = []
        for _, p in views[(page - 1) * PAGE: page * PAGE]:
            link = posting_path(runtime.config, claims["u"], p.id, now)
            vp = ' <span class="vp">退役军人优先</span>' if p.veteran_priority else ""
            items.append(
                f'<a class="item card" href="{e(link)}"><h2>{e(p.title)}{vp}</h2>'
                f'<div class="row">{e(p.company)}</div>'
                f'<div class="row">{e(p.location)} · <span class="pay">{e(salary_text(p.salary_min, p.salary_max))}</span>'
                f" · {e(p.job_type)}</div>"
                f'<div class="row note">截止：{e(deadline_text(p.deadline))}　点此查看详情和联系方式</div></a>'
            )
        head = f'<p class="note">{d.day.month}月{d.day.day}日为您找到 {d.total} 个岗位'
        head += f"，其中 {gone} 个已截止或已变更，未列出" if gone else ""
        head += f"（第 {page}/{pages} 页）。</p>" if pages > 1 else "。</p>"
        if not views:
            items.append('<div class="card">这些岗位都已截止。请在公众号回复“找工作”查看最新岗位。</div>')
        nav = []
        token = e(request.match_info["token"])
        if page > 1:
            nav.append(f'<a class="btn pause" href="/jobs/d/{token}?page={page - 1}">上一页</a>')
        if page < pages:
            nav.append(f'<a class="btn pause" href="/jobs/d/{token}?page={page + 1}">下一页</a>')
        return _page("为您推荐的岗位", head + "".join(items) + "".join(nav)
                     + _manage_form(request.match_info["token"], status)
                     + await subscribe_button(request, runtime, ["job_alert"]))

    async def manage(request: web.Request) -> web.Response:
        claims = _claims(runtime, request, None)
        if isinstance(claims, web.Response):
            return claims
        try:
            form = await request.post()
        except Exception:
            return _problem(400, "无法处理", "请求有误，请返回上一页重试。")
        action = form.get("action")
        if action not in ("pause", "unsubscribe"):
            return _problem(400, "无法处理", "请求有误，请返回上一页重试。")
        now = runtime.clock.now()
        async with runtime.db.session() as s:
            sub = await get_subscription(s, claims["u"])
            if sub is None or sub.status == CANCELLED:
                return _problem(200, "已退订", "您已经退订了岗位推送，不会再收到招聘信息。")
            sub.status = PAUSED if action == "pause" else CANCELLED
            sub.next_digest_at, sub.updated_at = None, now
            await s.execute(
                update(OutboxMessage)
                .where(OutboxMessage.openid == claims["u"], OutboxMessage.purpose == "job_alert",
                       OutboxMessage.status == "pending")
                .values(status="cancelled", last_error=f"job alerts {action} from the web page")
            )
        if action == "pause":
            return _problem(200, "已暂停", "已暂停岗位推送，设置都保留着。想恢复时在公众号回复“恢复推送”。")
        return _problem(200, "已退订", "已退订岗位推送，以后不会再收到招聘信息。想重新订阅请在公众号回复“订阅岗位”。")

    app.router.add_get("/jobs/p/{token}", posting)
    app.router.add_get("/jobs/d/{token}", digest)
    app.router.add_post("/jobs/s/{token}", manage)
