"""The console's pages over HTTP on SQLite and PostgreSQL: the dashboard's figures from their tables,
call-ups (create with the chat's checks, board, close, audit trail), 寄语 review in bulk, users and roles,
and the audit log of every staff action."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from bot.fake_wechat import fake_openid
from flows.callup import service as callups
from storage.callup import CallUp, CallUpTarget, Member
from storage.console import StaffAudit
from storage.memorial import APPROVED, PENDING, REJECTED, MemorialMessage, add_message
from storage.models import OutboxMessage, Ticket, User
from storage.outbox import Push, enqueue
from storage.qa import record_ask
from tests.callup.conftest import TEAMS, roster_rows, seed
from tests.console.conftest import ADMIN, PUBLIC, STAFF, T0, Site, add_user


def _n(body: str, label: str) -> int:
    """The figure shown before ``label`` on the dashboard (<b>N</b><span>label…)."""
    m = re.search(r"<b>(\d+)</b><span>" + re.escape(label), body) or \
        re.search(r"<b>(\d+)</b><span>" + re.escape(label), body.replace("\n", ""))
    assert m, label
    return int(m.group(1))


async def test_dashboard_reads_each_figure_from_its_table(site: Site) -> None:
    now = site.clock.now()
    # Two messages from one person through the real callback, and one event (not a message).
    await site.chat(PUBLIC, "你好")
    await site.chat(PUBLIC, "帮助")
    await site.event(fake_openid(500), "subscribe")
    async with site.db.session() as s:
        for decision in ("answer", "answer", "list", "unknown"):
            await record_ask(s, decision, None, now)
        await record_ask(s, "answer", None, now - timedelta(days=1))  # yesterday: not today's
        s.add(Ticket(openid=PUBLIC, text="请回电话", context={}, status="open", created_at=now))
        s.add(Ticket(openid=PUBLIC, text="旧的", context={}, status="closed", created_at=now, closed_at=now))
        await add_message(s, openid=PUBLIC, martyr_id=0, text="缅怀", preset=False, status=PENDING, now=now,
                          day=now.date())
        await enqueue(s, Push(openid=PUBLIC, purpose="notice", key="n1", text="x"), now)
    async with site.db.session() as s:
        row = (await s.execute(select(OutboxMessage).where(OutboxMessage.idempotency_key.endswith("n1")))).scalar_one()
        row.status, row.last_error = "failed", "template: 40037 invalid template_id"
    teams = await seed(site.db, roster_rows(TEAMS, 2), now)
    async with site.db.session() as s:
        await callups.create_callup(s, site.runtime.services, callups.CallupSpec(
            kind="防汛", title="防汛集结", place="大堤", assemble_at=now + timedelta(hours=1), needed=3,
            team_ids=[teams[TEAMS[0][0]]]), now)
    await site.login(STAFF)
    body = await (await site.client.get("/staff/")).text()
    assert _n(body, "今日消息（来自 1 人）") == 2
    assert _n(body, "关注者") == 4 + 6  # the fixture's three, the new follower, six roster members
    assert "答复 2，给出选项 1，未能回答 1" in body and _n(body, "今日政策提问") == 4
    assert _n(body, "待处理人工留言") == 1 and _n(body, "寄语待审核") == 1
    assert _n(body, "进行中的应急集结") == 1 and "防汛集结" in body
    assert "模板消息编号错误" in body  # the last failure, in words, with the raw reason beside it
    assert "累计失败：<b>1</b>" in body


async def _callup_form(site: Site, csrf: str, **over: str) -> dict[str, str]:
    form = {"csrf": csrf, "kind": "防汛", "title": "", "place": "城关镇防汛仓库", "time": "30分钟后", "needed": "3",
            "skill_驾驶": "1", "scope": "all", "drill": "no"}
    form.update(over)
    return form


async def test_create_a_callup_with_the_chats_checks_then_board_close_and_audit(site: Site) -> None:
    teams = await seed(site.db, roster_rows(TEAMS, 3), T0)
    async with site.db.session() as s:  # one member has not bound WeChat: the board says to phone them
        m = (await s.execute(select(Member).where(Member.phone == "13900000001"))).scalar_one()
        m.openid = None
    csrf = await site.login(STAFF)
    bad = await _callup_form(site, csrf, place="x", time="昨天", needed="2", **{"skill_驾驶": "5"}, drill="")
    resp = await site.client.post("/staff/callups/preview", data=bad)
    body = await resp.text()
    assert resp.status == 400
    for name in ("place", "time", "needed", "drill"):
        assert f'id="{name}-err"' in body, name
    assert "超过了总人数" in body  # parse_need's own words, as in chat
    form = await _callup_form(site, csrf, scope="teams", teams=str(teams[TEAMS[0][0]]))
    resp = await site.client.post("/staff/callups/preview", data=form)
    body = await resp.text()
    assert resp.status == 200 and "将马上通知 <b>2</b> 人" in body and "未绑定微信 1 人" in body
    resp = await site.client.post("/staff/callups/create", data={**form, "do": "create"}, allow_redirects=False)
    assert resp.status == 303
    board_url = resp.headers["Location"].split("?")[0]
    async with site.db.session() as s:
        c = (await s.execute(select(CallUp))).scalar_one()
        targets = list((await s.execute(select(CallUpTarget).where(CallUpTarget.callup_id == c.id))).scalars())
        pushes = list((await s.execute(select(OutboxMessage).where(OutboxMessage.purpose == "callup"))).scalars())
    assert c.title == "防汛集结" and c.created_by == STAFF and c.skills_needed == {"驾驶": 1}
    assert len(targets) == 3 and len(pushes) == 2
    # A member answers in chat; the board (and the fragment it refreshes from) shows it.
    member = roster_rows(TEAMS, 3)[2].openid
    assert "已记录：到" in (await site.chat(member or "", "1") or "")
    body = await (await site.client.get(board_url)).text()
    assert 'id="c-confirmed">1/3<' in body and 'id="c-unbound">1<' in body and 'href="tel:13900000001"' in body
    assert "未绑定微信，请电话通知" in body and "data-refresh-url" in body
    part = await (await site.client.get(board_url + "/board")).text()
    assert "<html" not in part and 'id="c-confirmed">1/3<' in part
    # A late arrival: the board's headline is the figure chat's 集结状态 gives (where late arrivals count
    # towards the quorum, they are in it: a walk-through saw 1/3 on the board beside 已确认 2/3 in chat).
    late = roster_rows(TEAMS, 3)[0].openid
    assert "已记录：晚到" in (await site.chat(late or "", "晚二十分钟到") or "")
    status = await site.chat(STAFF, "集结状态") or ""
    m_head = re.search(r"已确认 (\d+)/3", status)
    assert m_head, status
    body = await (await site.client.get(board_url)).text()
    assert f'id="c-confirmed">{m_head.group(1)}/3<' in body, status
    # Close (a confirmation page first), then the audit trail.
    assert "确认结束" in await (await site.client.get(board_url + "/close")).text()
    resp = await site.client.post(board_url + "/close", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].endswith("?done=closed")
    body = await (await site.client.get(resp.headers["Location"])).text()
    assert "已结束" in body and "data-refresh-url" not in body
    body = await (await site.client.get(board_url + "/audit")).text()
    assert "发起集结" in body and "结束集结" in body and "回复“到”，记为到" in body and "队员0002" in body
    async with site.db.session() as s:
        actions = [a.action for a in (await s.execute(select(StaffAudit).order_by(StaffAudit.id))).scalars()]
    assert actions[-2:] == ["callup.create", "callup.close"]
    assert (await site.client.get("/staff/callups/99999")).status == 404
    assert (await site.client.get("/staff/callups/%C2%B2")).status == 404


async def test_review_messages_in_bulk(site: Site) -> None:
    now = site.clock.now()
    async with site.db.session() as s:
        ids = []
        for i, text in enumerate(("英雄永远活在我们心中", "<script>alert(1)</script>广告", "缅怀先烈", "加微信xx")):
            m = await add_message(s, openid=fake_openid(600 + i), martyr_id=0, text=text, preset=False,
                                  status=PENDING, now=now, day=now.date())
            ids.append(m.id)
    csrf = await site.login(STAFF)
    body = await (await site.client.get("/staff/memorial")).text()
    assert "&lt;script&gt;" in body and "<script>alert" not in body and body.count('name="ids"') == 4
    resp = await site.client.post("/staff/memorial/decide", data={"csrf": csrf, "action": "reject",
                                                                  "ids": [str(ids[1]), str(ids[3])]})
    assert resp.status == 400 and "原因" in await resp.text()  # a rejection needs a reason
    resp = await site.client.post("/staff/memorial/decide", data={"csrf": csrf, "action": "reject", "reason": "含有广告或联系方式",
                                                                  "ids": [str(ids[1]), str(ids[3])]}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/staff/memorial?a=0&r=2&s=0"
    resp = await site.client.post("/staff/memorial/decide", data={"csrf": csrf, "action": "approve",
                                                                  "ids": [str(ids[0]), str(ids[2]), str(ids[1])]},
                                  allow_redirects=False)
    assert resp.headers["Location"] == "/staff/memorial?a=2&r=0&s=1"  # the one rejected already is skipped
    body = await (await site.client.get(resp.headers["Location"])).text()
    assert "已通过 2 条" in body and "1 条已被别人审核过" in body and "没有待审核的寄语" in body
    async with site.db.session() as s:
        msgs = {m.id: m for m in (await s.execute(select(MemorialMessage))).scalars()}
        notes = list((await s.execute(select(OutboxMessage).where(OutboxMessage.purpose == "notice"))).scalars())
        audit = [(a.action, a.target_id) for a in (await s.execute(select(StaffAudit).where(
            StaffAudit.action.startswith("memorial")))).scalars()]
    assert [msgs[i].status for i in ids] == [APPROVED, REJECTED, APPROVED, REJECTED]
    assert msgs[ids[1]].reason == "含有广告或联系方式" and msgs[ids[1]].decided_by == STAFF
    assert len(notes) == 4  # every author is told (the wording is the memorial service's)
    assert sorted(audit) == sorted([("memorial.reject", str(ids[1])), ("memorial.reject", str(ids[3])),
                                    ("memorial.approve", str(ids[0])), ("memorial.approve", str(ids[2]))])


async def test_users_search_roles_and_leave(site: Site) -> None:
    await add_user(site.db, fake_openid(700), T0, name="张建国", phone="13812345678", township="竹阳街道",
                   kind="veteran", roles="veteran")
    await seed(site.db, roster_rows(TEAMS[:1], 2), T0)
    async with site.db.session() as s:
        m = (await s.execute(select(Member).where(Member.phone == "13900000000"))).scalar_one()
        m.away_until = T0 + timedelta(days=2)
    csrf = await site.login(ADMIN)
    body = await (await site.client.get("/staff/users", params={"q": "张建"})).text()
    assert "张建国" in body and "138****5678" in body and "13812345678" not in body
    body = await (await site.client.get("/staff/users", params={"q": "%"})).text()
    assert "张建国" not in body  # LIKE wildcards are text
    body = await (await site.client.get("/staff/users", params={"role": "veteran"})).text()
    assert "张建国" in body and "群众丙" not in body
    body = await (await site.client.get("/staff/users")).text()
    assert "请假中的应急队员（1）" in body and "队员0000" in body
    # Grant staff, then admin; revoke staff (admin goes with it); the last admin cannot be removed.
    url = f"/staff/users/{PUBLIC}"
    for role, grant in (("staff", "1"), ("admin", "1"), ("staff", "0")):
        resp = await site.client.post(url + "/role", data={"csrf": csrf, "role": role, "grant": grant},
                                      allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"].endswith("done=changed")
    async with site.db.session() as s:
        assert (await s.get(User, PUBLIC)).roles == ""  # type: ignore[union-attr]
    resp = await site.client.post(f"/staff/users/{ADMIN}/role", data={"csrf": csrf, "role": "admin", "grant": "0"})
    assert resp.status == 400 and "自己" in await resp.text()
    resp = await site.client.post(url + "/role", data={"csrf": csrf, "role": "volunteer", "grant": "1"})
    assert resp.status == 400
    body = await (await site.client.get(url)).text()
    assert "权限变更记录" in body and "取消 staff" in body
    assert (await site.client.get("/staff/users/nobody")).status == 404


async def test_the_audit_log_lists_staff_actions_for_admins(site: Site) -> None:
    csrf = await site.login(ADMIN)
    await site.client.post(f"/staff/users/{PUBLIC}/role", data={"csrf": csrf, "role": "staff", "grant": "1"})
    body = await (await site.client.get("/staff/audit")).text()
    assert "授予权限" in body and "登录后台" in body and "管理员甲" in body and f"/staff/users/{PUBLIC}" in body
    body = await (await site.client.get("/staff/audit", params={"action": "user.grant"})).text()
    assert "授予权限" in body and "登录后台</td>" not in body
