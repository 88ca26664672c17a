"""用户: search people (name, phone, openid, township), their roles, and who is on leave: staff members (new
人工 tickets are pushed only to staff on duty, :mod:`storage.tickets`) and call-up members.

A staff member puts themselves on leave or back on duty; an administrator may do it for anyone. Roles are changed by administrators only (:func:`storage.console.set_role`: admin includes staff;
taking staff away ends that person's console sessions at once). An administrator cannot take away their
own admin role, and the last administrator cannot be removed, so the console never locks itself out.
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import func, or_, select

from bot.web.console.base import Console, field, form, see_other, staff_of
from storage.callup import Member, Team
from storage.console import StaffAudit, audit, set_role
from storage.memorial import escape_like
from storage.models import User
from storage.tickets import on_leave, set_leave

KIND_WORDS = {"veteran": "退役军人", "family": "军属/家属", "other": "其他"}
#: Roles the console grants and revokes (the others come from what people do: 我的信息, binding).
MANAGED = ("staff", "admin")
LIMIT = 50


def routes(app: web.Application, c: Console) -> None:
    async def index(request: web.Request) -> web.Response:
        q = field(request.query, "q", 50)  # type: ignore[arg-type]
        role = field(request.query, "role", 20)  # type: ignore[arg-type]
        now = c.now()
        async with c.db.session() as s:
            stmt = select(User).order_by(User.last_seen.desc()).limit(LIMIT)
            if q:
                like = f"%{escape_like(q)}%"
                stmt = stmt.where(or_(User.name.like(like, escape="\\"), User.phone.like(like, escape="\\"),
                                      User.township.like(like, escape="\\"), User.openid == q))
            if role in c_role_words():
                stmt = stmt.where(User.roles.contains(role))
            users = [u for u in (await s.execute(stmt)).scalars() if not role or u.has_role(role)]
            total = (await s.execute(select(func.count()).select_from(User))).scalar_one()
            leave = (await s.execute(select(Member, Team.name).join(Team, Team.id == Member.team_id)
                                     .where(Member.away_until > now).order_by(Member.away_until))).all()
            away = await on_leave(s)
            staff_rows = [u for u in (await s.execute(select(User).where(
                User.roles.contains("staff") | User.roles.contains("admin")).order_by(User.name))).scalars()
                if u.has_role("staff") or u.has_role("admin")]
        return c.page(request, "console/users.html", title="用户", users=users, q=q, role=role, total=total,
                      leave=leave, kind_words=KIND_WORDS, limit=LIMIT, away=away, staff_rows=staff_rows,
                      done=request.query.get("done", ""))

    async def detail(request: web.Request) -> web.Response:
        openid = request.match_info["openid"]
        async with c.db.session() as s:
            user = await s.get(User, openid) if len(openid) <= 64 else None
            if user is None:
                return c.message(request, 404, "没有这个用户", "没有找到这个用户。", back="/staff/users")
            member = (await s.execute(select(Member, Team.name).join(Team, Team.id == Member.team_id)
                                      .where(Member.openid == openid))).first()
            history = list((await s.execute(select(StaffAudit).where(
                StaffAudit.target_type == "user", StaffAudit.target_id == openid,
                StaffAudit.action.in_(("user.grant", "user.revoke", "user.leave", "user.duty")))
                .order_by(StaffAudit.id.desc()).limit(10))).scalars())
            is_away = openid in await on_leave(s)
        staff = staff_of(request)
        return c.page(request, "console/user.html", title=user.name or "用户", user=user, member=member,
                      history=history, kind_words=KIND_WORDS, managed=MANAGED, can_manage=staff.is_admin,
                      is_away=is_away, can_leave=staff.is_admin or user.openid == staff.openid,
                      done=request.query.get("done", ""), is_self=user.openid == staff.openid)

    async def change_role(request: web.Request) -> web.Response:
        staff = staff_of(request)
        openid = request.match_info["openid"]
        back = f"/staff/users/{openid}"
        if not staff.is_admin:
            return c.message(request, 403, "没有权限", "只有管理员可以更改工作人员权限。", back=back)
        data = await form(request)
        role, grant = field(data, "role"), field(data, "grant") == "1"
        if role not in MANAGED:
            return c.message(request, 400, "无法更改", "只能在这里授予或取消“工作人员”和“管理员”。", back=back)
        async with c.db.session() as s:
            user = await s.get(User, openid) if len(openid) <= 64 else None
            if user is None:
                return c.message(request, 404, "没有这个用户", "没有找到这个用户。", back="/staff/users")
            losing_admin = not grant and user.has_role("admin")
            if losing_admin and user.openid == staff.openid:
                return c.message(request, 400, "无法更改", "不能取消自己的管理员权限（以免后台无人管理）。"
                                 "请让另一位管理员操作。", back=back)
            if losing_admin:
                admins = [r for r in (await s.execute(select(User.roles).where(User.roles.contains("admin"))))
                          .scalars() if "admin" in (r or "").split(",")]
                if len(admins) <= 1:
                    return c.message(request, 400, "无法更改", "这是最后一位管理员，不能取消。", back=back)
            changed = await set_role(s, user, role, grant, by=staff.openid, via="console", now=c.now())
        return see_other(f"{back}?done={'changed' if changed else 'same'}")

    async def change_leave(request: web.Request) -> web.Response:
        staff = staff_of(request)
        openid = request.match_info["openid"]
        back = f"/staff/users/{openid}"
        if not (staff.is_admin or openid == staff.openid):
            return c.message(request, 403, "没有权限", "只能更改自己的值班状态；更改别人的请找管理员。", back=back)
        data = await form(request)
        leave = field(data, "leave") == "1"
        async with c.db.session() as s:
            user = await s.get(User, openid) if len(openid) <= 64 else None
            if user is None:
                return c.message(request, 404, "没有这个用户", "没有找到这个用户。", back="/staff/users")
            if leave and not (user.has_role("staff") or user.has_role("admin")):
                return c.message(request, 400, "无法更改", "只有工作人员有值班状态。", back=back)
            now = c.now()
            changed = await set_leave(s, openid, leave, by=staff.openid, now=now)
            if changed:
                who = user.name or openid[-6:]
                await audit(s, actor=staff.openid, actor_name=staff.name, now=now, via="console",
                            action="user.leave" if leave else "user.duty", target_type="user", target_id=openid,
                            summary=f"{who} {'请假（不再收到新的人工留言推送）' if leave else '恢复在岗'}")
        return see_other(f"{back}?done={'changed' if changed else 'same'}")

    app.router.add_get("/staff/users", index)
    app.router.add_post("/staff/users/{openid}/leave", change_leave)
    app.router.add_get("/staff/users/{openid}", detail)
    app.router.add_post("/staff/users/{openid}/role", change_role)


def c_role_words() -> set[str]:
    return {"admin", "staff", "volunteer", "veteran", "family"}
