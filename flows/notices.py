"""订阅通知 in chat: the consent events WeChat sends, and the offer to turn notices on.

WeChat reports every choice a person makes about the account's 订阅通知 templates as an event:
``subscribe_msg_popup_event`` (accept / reject in a popup on a page or in an article),
``subscribe_msg_change_event`` (turned one off in the 服务通知 settings) and
``subscribe_msg_sent_event`` (a notice's delivery result). They are recorded per person and template
in :mod:`storage.subscribe`, in the turn's transaction; the outbox then sends a purpose's notices
through its 订阅通知 template to everyone whose consent it holds.

Consent cannot be given by typing: WeChat asks in its own popup, opened from a page's button
(``wx-open-subscribe``, see :mod:`bot.web.notices`). When someone subscribes to job alerts or reminders
in chat, :func:`offer` adds a link to that page.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import update

from flows.api import Context, on_event
from storage import subscribe as consent
from storage.models import OutboxMessage

log = logging.getLogger(__name__)

#: What a person is told a purpose's notices are for (the subscribe page lists them).
PURPOSE_WORDS = {
    "callup": "应急集结通知：有集结任务时第一时间通知您",
    "job_alert": "岗位推荐通知：有符合您订阅条件的新岗位时通知您",
    "memorial_reminder": "祭扫活动提醒：清明节、烈士纪念日当天提醒您",
    "broadcast": "通知公告：局里发布的重要通知",
    "late_reply": "咨询回复通知：您的问题有答复时通知您",
    "ticket_reply": "留言回复通知：工作人员回复您的留言时通知您",
    "callup_progress": "集结进展通知：集结人数变化时通知您",
    "notice": "办理结果通知：您办理的事项有结果时通知您",
}
#: Offered links to the subscribe page stay valid this long.
OFFER_TTL_S = 30 * 86400
#: ``link_tokens.kind`` of the "开启消息提醒" page link (data: the purposes offered).
NOTICES_KIND = "notices"


def subscribe_kinds(config: Any) -> dict[str, str]:
    """template_id -> one_time / long_term, for every 订阅通知 template in ``templates:``."""
    out: dict[str, str] = {}
    for spec in config.templates.values():
        sub = spec.subscribe
        if sub is not None and sub.template_id:
            out[sub.template_id] = sub.kind
    return out


def _entries(ctx: Context) -> list[dict[str, Any]]:
    items = ctx.inbound.extra.get("subscribe")
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


@on_event("subscribe_msg_popup_event")
async def on_popup(ctx: Context) -> None:
    """The person chose in a popup: accept adds consent (one more notice for a one-time template)."""
    entries = _entries(ctx)
    choices = [consent.Choice(e["template_id"], e["status"]) for e in entries]
    scene = next((e.get("scene") for e in entries if e.get("scene")), None)
    n = await consent.record_choices(ctx.session, ctx.openid, choices, ctx.now, scene=scene,
                                     kinds=subscribe_kinds(ctx.config))
    log.info("订阅通知 popup: %d choice(s) recorded", n)


@on_event("subscribe_msg_change_event")
async def on_change(ctx: Context) -> None:
    """The person turned templates off in WeChat's settings: no more notices on them."""
    choices = [consent.Choice(e["template_id"], consent.REJECT) for e in _entries(ctx)
               if e.get("status") in ("reject", "")]
    await consent.record_choices(ctx.session, ctx.openid, choices, ctx.now, scene="change",
                                 kinds=subscribe_kinds(ctx.config))


@on_event("subscribe_msg_sent_event")
async def on_sent(ctx: Context) -> None:
    """A notice's delivery result: kept with the consent (and with the push, when WeChat's MsgID is ours)."""
    for e in _entries(ctx):
        result = e.get("error_status") or (f"error {e['error_code']}" if e.get("error_code") else "success")
        await consent.record_result(ctx.session, ctx.openid, e["template_id"], str(result), ctx.now)
        if isinstance(e.get("msg_id"), int):
            await ctx.session.execute(
                update(OutboxMessage).where(OutboxMessage.wechat_msgid == e["msg_id"],
                                            OutboxMessage.openid == ctx.openid)
                .values(delivery_status=str(result)[:64]))


async def offer(ctx: Context, *purposes: str) -> str | None:
    """A line with a link to turn on the 订阅通知 of ``purposes``, or None when there is nothing to offer
    (no 订阅通知 template configured, or the person's consent already covers them)."""
    cfg = ctx.config
    wanted = {}
    for p in purposes:
        spec = cfg.templates.get(p)
        if spec is not None and spec.subscribe is not None and spec.subscribe.template_id:
            wanted[p] = spec.subscribe
    if not wanted:
        return None
    have = await consent.accepted(ctx.session, ctx.openid, [s.template_id for s in wanted.values()])
    # A long-term consent covers every later notice; a one-time one only the next.
    missing = [p for p, s in wanted.items() if s.template_id not in have or s.kind == "one_time"]
    if not missing:
        return None
    from storage import linktokens

    token = await linktokens.issue(ctx.session, NOTICES_KIND, ctx.openid, {"p": ",".join(missing)}, OFFER_TTL_S,
                                   now=ctx.now)
    link = f"{cfg.server.public_url.rstrip('/')}/notices/{token}"
    return f"为确保不和公众号聊天时也能收到，请点开链接，点“开启消息提醒”并选“允许”：\n{link}"
