"""操作记录 (administrators only): every staff action — who, when, what, on which record, from where
(console, chat or CLI) — newest first, filtered by kind of action or by person."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from bot.web.console.base import Console, field, int_or_none, staff_of
from storage.console import audit_actions, audit_entries
from storage.models import User

ACTION_WORDS = {
    "console.login": "登录后台", "console.logout": "退出后台", "console.link": "生成登录链接",
    "broadcast.send": "发送群发通知", "broadcast.schedule": "定时群发通知", "broadcast.cancel": "撤回群发通知",
    "callup.create": "发起集结", "callup.close": "结束集结",
    "memorial.approve": "寄语通过", "memorial.reject": "寄语不通过",
    "user.grant": "授予权限", "user.revoke": "取消权限",
}
VIA_WORDS = {"console": "后台", "chat": "微信", "cli": "命令行"}
TARGET_WORDS = {"broadcast": "通知", "callup": "集结", "user": "用户", "memorial_message": "寄语"}
TARGET_LINKS = {"broadcast": "/staff/broadcasts/{}", "callup": "/staff/callups/{}", "user": "/staff/users/{}"}
# 知识库 and 导入
ACTION_WORDS.update({"kb.create": "新增知识库条目", "kb.edit": "修改知识库条目", "kb.alternate": "知识库加问法",
                     "kb.delete": "删除知识库条目", "kb.restore": "恢复知识库条目", "import.roster": "导入名册",
                     "import.martyrs": "导入英烈名录", "import.jobs": "导入招聘岗位"})
TARGET_WORDS.update({"kb_entry": "知识库条目", "import": "导入"})
TARGET_LINKS.update({"kb_entry": "/staff/kb/entry/{}"})
# 人工 and staff on duty
ACTION_WORDS.update({"ticket.reply": "回复人工留言", "ticket.close": "结束人工服务", "user.leave": "设为请假",
                     "user.duty": "恢复在岗"})
TARGET_WORDS.update({"ticket": "人工留言"})
TARGET_LINKS.update({"ticket": "/staff/inbox/{}"})
PAGE = 50


def routes(app: web.Application, c: Console) -> None:
    async def index(request: web.Request) -> web.Response:
        if not staff_of(request).is_admin:
            return c.message(request, 403, "没有权限", "操作记录只有管理员可以查看。", back="/staff/")
        action = field(request.query, "action", 48)  # type: ignore[arg-type]
        actor = field(request.query, "actor", 64)  # type: ignore[arg-type]
        before = int_or_none(request.query.get("before", ""))
        async with c.db.session() as s:
            rows = await audit_entries(s, limit=PAGE, before_id=before, actor=actor or None, action=action or None)
            actions = await audit_actions(s)
            actors = {r.actor for r in rows}
            names = dict((await s.execute(select(User.openid, User.name).where(User.openid.in_(actors))))
                         .all()) if actors else {}

        def link(r: object) -> str | None:
            pattern = TARGET_LINKS.get(getattr(r, "target_type", ""))
            return pattern.format(getattr(r, "target_id", "")) if pattern and getattr(r, "target_id", "") else None

        return c.page(request, "console/audit.html", title="操作记录", rows=rows, actions=actions, action=action,
                      actor=actor, names=names, words=ACTION_WORDS, via_words=VIA_WORDS, link=link, target_words=TARGET_WORDS,
                      more=rows[-1].id if len(rows) == PAGE else None)

    app.router.add_get("/staff/audit", index)
