"""群发通知 in the console: compose (标题, 正文, optional link; audience; now or later) → confirm with the
recipient count and who it covers and why → queued → a delivery report per notice (sent / failed / pending
by channel, the reasons, the people not reached); a scheduled notice can be taken back.

Everything goes through :mod:`flows.broadcast.service`, as the chat and ``vetbot broadcast`` do.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from bot.web.console.base import Console, field, form, int_or_none, parse_local, see_other, staff_of
from flows.broadcast import service
from storage import broadcast as store
from storage.models import User

AUDIENCE_KINDS = {"all": "全部关注者", "role": "按身份", "township": "按乡镇", "team": "按应急队伍"}
#: WeChat lets a template message reach people who did not ask for it only for fault and disaster warnings
#: (wechat-facts.md); an ordinary notice reaches the chat window, 订阅通知 consent and SMS only.
NOTICE_KINDS = {"notice": "普通通知", "warning": "灾害、故障预警"}


def _values(data: MultiDictProxy[Any] | None) -> dict[str, str]:
    names = ("title", "text", "url", "audience", "role", "township", "team", "when", "at", "kind")
    vals = {n: field(data, n, 2000) if data is not None else "" for n in names}
    vals["audience"] = vals["audience"] if vals["audience"] in AUDIENCE_KINDS else "all"
    vals["kind"] = "warning" if vals["kind"] == "warning" else "notice"
    vals["when"] = "later" if vals["when"] == "later" else "now"
    return vals


async def _check(c: Console, s: Any, v: dict[str, str]) -> tuple[dict[str, str], service.Audience, Any]:
    """Errors by field name, the audience and the send time (naive UTC or None = now)."""
    errors: dict[str, str] = {}
    try:
        service.clean(v["title"], "x", None)
    except service.BroadcastError as e:
        errors["title"] = str(e)
    try:
        service.clean("x", v["text"], None)
    except service.BroadcastError as e:
        errors["text"] = str(e)
    try:
        service.clean("x", "x", v["url"])
    except service.BroadcastError as e:
        errors["url"] = str(e)
    audience = service.Audience()
    kind = v["audience"]
    if kind == "role":
        if v["role"] not in service.ROLES:
            errors["role"] = "请选择身份。"
        audience.role = v["role"] or None
    elif kind == "township":
        if not 2 <= len(v["township"]) <= 20:
            errors["township"] = "请填写乡镇名称（2-20个字）。"
        audience.township = v["township"] or None
    elif kind == "team":
        team_id = int_or_none(v["team"])
        if team_id is None:
            errors["team"] = "请选择队伍。"
        audience.team_id = team_id
    at = None
    if v["when"] == "later":
        at = parse_local(v["at"], c.tz)
        if at is None:
            errors["at"] = "请填写发送时间，例如 2026-04-04 08:00。"
        elif at <= c.now():
            errors["at"] = "这个时间已经过去了。要马上发送，请选“立即发送”。"
    return errors, audience, at


def routes(app: web.Application, c: Console) -> None:
    async def compose_page(request: web.Request, v: dict[str, str], errors: dict[str, str] | None = None,
                           status: int = 200) -> web.Response:
        async with c.db.session() as s:
            towns = await service.known_townships(s)
            teams = await service.teams(s)
        return c.page(request, "console/broadcast_new.html", status=status, title="新建群发通知", v=v,
                      errors=errors or {}, towns=towns, teams=teams, roles=service.ROLES, kinds=AUDIENCE_KINDS,
                      notice_kinds=NOTICE_KINDS, limits=(service.TITLE_MAX, service.TEXT_MAX))

    async def index(request: web.Request) -> web.Response:
        before = int_or_none(request.query.get("before", ""))
        async with c.db.session() as s:
            rows = await store.recent(s, 30, before)
            counts = await store.status_of(s, [b.id for b in rows])
        now = c.now()
        items = [(b, counts.get(b.id, {}), service.summary_state(b, counts.get(b.id, {}), now)) for b in rows]
        return c.page(request, "console/broadcasts.html", title="群发通知", items=items,
                      more=rows[-1].id if len(rows) == 30 else None)

    async def new(request: web.Request) -> web.Response:
        return await compose_page(request, _values(None))

    async def preview(request: web.Request) -> web.Response:
        v = _values(await form(request))
        async with c.db.session() as s:
            errors, audience, at = await _check(c, s, v)
            resolved = None
            if not errors:
                try:
                    resolved = await service.resolve(s, audience, with_openids=False)
                except service.BroadcastError as e:
                    errors[v["audience"] if v["audience"] != "all" else "audience"] = str(e)
        if errors or resolved is None:
            return await compose_page(request, v, errors, status=400)
        return c.page(request, "console/broadcast_confirm.html", title="确认群发通知", v=v, r=resolved, at=at,
                      kind=AUDIENCE_KINDS[v["audience"]], notice_kind=NOTICE_KINDS[v["kind"]])

    async def send(request: web.Request) -> web.Response:
        data = await form(request)
        v = _values(data)
        if field(data, "do") == "edit":
            return await compose_page(request, v)
        staff = staff_of(request)
        now = c.now()
        async with c.db.session() as s:
            errors, audience, at = await _check(c, s, v)
            if errors:
                return await compose_page(request, v, errors, status=400)
            try:
                q = await service.queue(s, now, title=v["title"], text=v["text"], url=v["url"] or None,
                                        audience=audience, tz=c.tz, at=at, by=staff.openid, via="console",
                                        warning=v["kind"] == "warning")
            except service.BroadcastError as e:
                return await compose_page(request, v, {"audience": str(e)}, status=400)
        if q.broadcast_id is None:
            return c.message(request, 200, "没有发送", "按所选对象，没有关注者能收到这条通知。\n" + q.resolved.explain(),
                             back="/staff/broadcasts/new")
        if q.fan_out:  # many recipients: queued in chunks in the background; the report shows the progress
            c.background(service.fan_out(c.db, q.broadcast_id, now, c.tz))
            return see_other(f"/staff/broadcasts/{q.broadcast_id}?done=queued")
        return see_other(f"/staff/broadcasts/{q.broadcast_id}?done={'queued' if q.queued else 'again'}")

    async def _load(request: web.Request) -> tuple[store.Broadcast, dict[str, Any]] | web.Response:
        bid = int_or_none(request.match_info["id"])
        async with c.db.session() as s:
            b = await s.get(store.Broadcast, bid) if bid is not None else None
            if b is None:
                return c.message(request, 404, "没有这条通知", "这条群发通知不存在。", back="/staff/broadcasts")
            d = await store.delivery(s, b.id)
            who = await s.get(User, b.created_by) if b.created_by and not b.created_by.startswith("cli") else None
        d["sender"] = (who.name or "工作人员") if who is not None else ("命令行" if b.created_by.startswith("cli")
                                                                   else b.created_by)
        return b, d

    def _report_context(b: store.Broadcast, d: dict[str, Any]) -> dict[str, Any]:
        counts = d["by_status"]
        channels = [(service.CHANNEL_WORDS.get(ch, ch), st) for ch, st in sorted(d["by_channel"].items(),
                                                                                  key=lambda kv: kv[0] or "~")]
        people = [{**p, "reason_text": service.reason_text(p["delivery_status"] if p["status"] == "sent"
                                                            else p["last_error"])} for p in d["not_reached"]]
        reasons = [(service.reason_text(r), r, n) for r, n in d["reasons"].items()]
        preparing = max(0, b.recipients - d["total"]) if b.queued_at is None and b.cancelled_at is None else 0
        waiting = counts.get("pending", 0) + counts.get("sending", 0) + preparing
        return {"b": b, "d": d, "counts": counts, "channels": channels, "people": people, "reasons": reasons,
                "preparing": preparing,
                "state": service.summary_state(b, counts, c.now()), "waiting": waiting,
                # Poll while pushes wait (a notice scheduled for tomorrow: only from shortly before).
                "refresh": waiting > 0 and b.due_at <= c.now() + timedelta(minutes=10),
                "status_words": service.STATUS_WORDS,
                "can_cancel": counts.get("pending", 0) + counts.get("failed", 0) + preparing > 0}

    async def report(request: web.Request) -> web.Response:
        loaded = await _load(request)
        if isinstance(loaded, web.Response):
            return loaded
        b, d = loaded
        return c.page(request, "console/broadcast_report.html", title=f"通知：{b.title}",
                      done=request.query.get("done", ""), n=int_or_none(request.query.get("n", "")) or 0,
                      **_report_context(b, d))

    async def report_part(request: web.Request) -> web.Response:
        loaded = await _load(request)
        if isinstance(loaded, web.Response):
            return loaded
        b, d = loaded
        return c.page(request, "console/_broadcast_delivery.html", **_report_context(b, d))

    async def cancel(request: web.Request) -> web.Response:
        bid = int_or_none(request.match_info["id"])
        staff = staff_of(request)
        async with c.db.session() as s:
            done = await service.cancel(s, bid, c.now(), by=staff.openid) if bid is not None else None
        if done is None:
            return c.message(request, 404, "没有这条通知", "这条群发通知不存在。", back="/staff/broadcasts")
        return see_other(f"/staff/broadcasts/{bid}?done=cancelled&n={done['cancelled']}")

    app.router.add_get("/staff/broadcasts", index)
    app.router.add_get("/staff/broadcasts/new", new)
    app.router.add_post("/staff/broadcasts/preview", preview)
    app.router.add_post("/staff/broadcasts/send", send)
    app.router.add_get("/staff/broadcasts/{id}", report)
    app.router.add_get("/staff/broadcasts/{id}/delivery", report_part)
    app.router.add_post("/staff/broadcasts/{id}/cancel", cancel)
