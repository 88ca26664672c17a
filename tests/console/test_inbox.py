"""人工 inbox over HTTP and WeChat XML, on SQLite and PostgreSQL: a two-way ticket (the person in WeChat, staff
on the console page), the 48-hour window note and its fallback channel, staff on leave not notified, the
users page's leave toggle, CSRF and anonymous access; the storage under it."""

from __future__ import annotations

import re
import time
from datetime import timedelta

from sqlalchemy import func, select

from bot.outbox import build_sender
from bot.sim import voice_xml
from storage import tickets as store
from storage.console import StaffAudit
from storage.models import OutboxMessage, Ticket, User
from tests.console.conftest import ADMIN, PUBLIC, STAFF, Site, add_user


def image_xml(openid: str, msg_id: int) -> str:
    return (f"<xml><ToUserName><![CDATA[gh_vetbot]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[image]]></MsgType>"
            f"<PicUrl><![CDATA[http://mmbiz.qpic.cn/x.jpg]]></PicUrl><MediaId><![CDATA[m{msg_id}]]></MediaId>"
            f"<MsgId>{msg_id}</MsgId></xml>")


async def _pushes(site: Site, openid: str, purpose: str | None = None) -> list[OutboxMessage]:
    async with site.db.session() as s:
        q = select(OutboxMessage).where(OutboxMessage.openid == openid).order_by(OutboxMessage.id)
        if purpose:
            q = q.where(OutboxMessage.purpose == purpose)
        return list((await s.execute(q)).scalars())


async def _deliver(site: Site) -> None:
    sender = build_sender(site.config, site.db, site.clock)
    try:
        await sender.deliver_due()
    finally:
        await sender.close()


async def _open(site: Site, who: str = PUBLIC, text: str = "我的优待证丢了，怎么补办？") -> int:
    assert "请直接输入" in (await site.chat(who, "人工") or "")
    reply = await site.chat(who, text) or ""
    m = re.search(r"编号 (\d+)", reply)
    assert m and "结束人工" in reply, reply
    return int(m.group(1))


async def test_a_two_way_ticket_between_wechat_and_the_console(site: Site) -> None:
    await add_user(site.db, "u_town", site.clock.now())  # (not staff: gets no push)
    async with site.db.session() as s:
        u = await s.get(User, PUBLIC)
        u.township = "城关镇"
    # The person was filling in 我的信息, asked for 人工, and wrote; then a photo, a voice message and 帮助.
    assert "需要修改请回复数字" in (await site.chat(PUBLIC, "我的信息") or "")
    tid = await _open(site)
    assert await site._post(image_xml(PUBLIC, 7001)) is None  # silence: told once already
    assert await site._post(voice_xml(PUBLIC, "v1", msg_id=7002)) is None
    assert await site.chat(PUBLIC, "帮助") is None  # 帮助 is for the staff member now, not the bot's menu
    # Staff on duty were pushed the new ticket with its number and how to answer.
    for staff in (ADMIN, STAFF):
        (p,) = await _pushes(site, staff)
        assert f"新的人工留言 {tid} 号" in p.payload["text"] and f"回复 {tid} 内容" in p.payload["text"]
    assert await _pushes(site, "u_town") == []

    csrf = await site.login(STAFF)
    inbox = await (await site.client.get("/staff/inbox")).text()
    assert "群众丙" in inbox and "城关镇" in inbox and "我的优待证丢了" in inbox and "不到 1 分钟" in inbox
    site.clock.advance(minutes=7)
    part = await (await site.client.get("/staff/inbox/list")).text()
    assert "7 分钟" in part and "<html" not in part
    page = await (await site.client.get(f"/staff/inbox/{tid}")).text()
    assert "［图片］" in page and "［语音］" in page and ">帮助<" in page.replace("\n", "")
    assert re.search(r"当时在用</dt><dd>[^<]*(我的信息|个人信息)", page), page[page.find("<dl"):][:600]
    # The recent conversation as stored: the bot's last replies before the ticket (我的信息, then 人工's prompt).
    recent = page[page.find('id="recent"'):page.find('id="thread-title"')]
    assert "需要修改请回复数字" in recent and "请直接输入您要留给工作人员的话" in recent
    assert "客服消息直接出现在对方的对话里" in page  # inside the 48-hour window

    resp = await site.client.post(f"/staff/inbox/{tid}/reply", data={"csrf": csrf, "text": "您好，带身份证到局里补办。"},
                                  allow_redirects=False)
    assert resp.status == 303
    (reply,) = await _pushes(site, PUBLIC, "ticket_reply")
    assert "带身份证到局里补办" in reply.payload["text"] and "结束人工" in reply.payload["text"]
    await _deliver(site)
    kefu = [c for c in site.fake.state.calls if c["path"] == "/cgi-bin/message/custom/send"
            and c["body"]["touser"] == PUBLIC]
    assert len(kefu) == 1 and "带身份证到局里补办" in kefu[0]["body"]["text"]["content"]
    page = await (await site.client.get(f"/staff/inbox/{tid}/thread")).text()
    assert "已送达微信（客服消息）" in page and "工作人员乙" in page

    # The person answers (silently into the thread); the staff member who replied is pushed it.
    assert await site.chat(PUBLIC, "好的，明天就去") is None
    assert "好的，明天就去" in await (await site.client.get(f"/staff/inbox/{tid}/thread")).text()
    assert any("好的，明天就去" in p.payload["text"] for p in await _pushes(site, STAFF))
    assert not any("好的，明天就去" in p.payload["text"] for p in await _pushes(site, ADMIN))

    resp = await site.client.post(f"/staff/inbox/{tid}/close", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == f"/staff/inbox?done=closed-{tid}"
    assert "已结束" in (await _pushes(site, PUBLIC, "ticket_reply"))[-1].payload["text"]
    # The bot listens again.
    assert "您可以回复数字办理" in (await site.chat(PUBLIC, "帮助") or "")
    async with site.db.session() as s:
        t = await s.get(Ticket, tid)
        assert t.status == "closed" and t.staff_reply == "您好，带身份证到局里补办。"
        kinds = [(m.author, m.kind) for m in await store.thread(s, tid)]
        assert kinds == [("person", "text"), ("person", "image"), ("person", "voice"), ("person", "text"),
                         ("staff", "text"), ("person", "text"), ("note", "text")]
        audits = [(a.action, a.actor, a.target_id) for a in (await s.execute(
            select(StaffAudit).where(StaffAudit.target_type == "ticket").order_by(StaffAudit.id))).scalars()]
        assert audits == [("ticket.reply", STAFF, str(tid)), ("ticket.close", STAFF, str(tid))]
    closed = await (await site.client.get("/staff/inbox")).text()
    assert "现在没有待处理的人工留言" in closed and "最近结束的" in closed
    # A closed ticket takes no more replies, and says so.
    resp = await site.client.post(f"/staff/inbox/{tid}/reply", data={"csrf": csrf, "text": "还有吗"})
    assert resp.status == 400 and "已经结束" in await resp.text()


async def test_outside_the_48_hour_window_the_page_says_so_and_the_outbox_falls_back(site: Site) -> None:
    tid = await _open(site)
    site.clock.advance(hours=49)
    csrf = await site.login(ADMIN)
    page = await (await site.client.get(f"/staff/inbox/{tid}")).text()
    assert "已超过 48 小时没有发消息" in page and "模板消息" in page
    resp = await site.client.post(f"/staff/inbox/{tid}/reply", data={"csrf": csrf, "text": "您的事已办好。"},
                                  allow_redirects=False)
    assert resp.status == 303
    await _deliver(site)
    paths = [c["path"] for c in site.fake.state.calls if (c.get("body") or {}).get("touser") == PUBLIC]
    assert "/cgi-bin/message/custom/send" not in paths and "/cgi-bin/message/template/send" in paths
    thread = await (await site.client.get(f"/staff/inbox/{tid}/thread")).text()
    assert "模板消息" in thread


async def test_empty_or_long_reply_is_refused_at_the_field_and_nothing_is_sent(site: Site) -> None:
    tid = await _open(site)
    csrf = await site.login(STAFF)
    resp = await site.client.post(f"/staff/inbox/{tid}/reply", data={"csrf": csrf, "text": "   "})
    assert resp.status == 400 and "回复内容是空的" in await resp.text()
    long = "字" * 700
    resp = await site.client.post(f"/staff/inbox/{tid}/reply", data={"csrf": csrf, "text": long})
    body = await resp.text()
    assert resp.status == 400 and "600 字以内" in body and long in body  # the draft is kept
    assert await _pushes(site, PUBLIC, "ticket_reply") == []
    resp = await site.client.get("/staff/inbox/999999")
    assert resp.status == 404


async def test_posts_without_csrf_are_refused_and_anonymous_sees_nothing(site: Site) -> None:
    tid = await _open(site)
    for path in ("/staff/inbox", "/staff/inbox/list", f"/staff/inbox/{tid}", f"/staff/inbox/{tid}/thread"):
        resp = await site.client.get(path, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"].startswith("/staff/login"), path
        assert "群众丙" not in await resp.text() and "优待证" not in await resp.text()
    await site.login(ADMIN)
    for path, data in ((f"/staff/inbox/{tid}/reply", {"text": "你好"}), (f"/staff/inbox/{tid}/close", {}),
                       (f"/staff/users/{STAFF}/leave", {"leave": "1"})):
        resp = await site.client.post(path, data=data, allow_redirects=False)
        assert resp.status == 403, path
        resp = await site.client.post(path, data={**data, "csrf": "0" * 64}, allow_redirects=False)
        assert resp.status == 403, path
    async with site.db.session() as s:
        assert (await s.get(Ticket, tid)).status == "open"
        assert await store.on_leave(s) == set()
    assert await _pushes(site, PUBLIC, "ticket_reply") == []


async def test_staff_on_leave_are_not_pushed_new_tickets(site: Site) -> None:
    csrf = await site.login(STAFF)
    # A staff member may not change someone else's duty; their own, yes.
    resp = await site.client.post(f"/staff/users/{ADMIN}/leave", data={"csrf": csrf, "leave": "1"})
    assert resp.status == 403
    resp = await site.client.post(f"/staff/users/{STAFF}/leave", data={"csrf": csrf, "leave": "1"},
                                  allow_redirects=False)
    assert resp.status == 303
    page = await (await site.client.get(f"/staff/users/{STAFF}")).text()
    assert "请假中" in page and "恢复在岗" in page
    users = await (await site.client.get("/staff/users")).text()
    assert "工作人员值班（1 人在岗）" in users
    tid = await _open(site)
    assert [p.payload["text"][:20] for p in await _pushes(site, STAFF)] == []
    assert len(await _pushes(site, ADMIN)) == 1
    resp = await site.client.post(f"/staff/users/{STAFF}/leave", data={"csrf": csrf, "leave": "0"},
                                  allow_redirects=False)
    assert resp.status == 303
    async with site.db.session() as s:
        assert await store.on_leave(s) == set()
        actions = list((await s.execute(select(StaffAudit.action).where(StaffAudit.target_id == STAFF,
                                                                        StaffAudit.action.startswith("user."))
                                        .order_by(StaffAudit.id))).scalars())
        assert actions == ["user.leave", "user.duty"]
    # Back on duty: the next person's ticket reaches them.
    await add_user(site.db, "u_next", site.clock.now(), name="李四")
    tid2 = await _open(site, "u_next", "补贴什么时候发")
    assert tid2 == tid + 1 and len(await _pushes(site, STAFF)) == 1


async def test_search_finds_people_by_name_phone_and_openid(site: Site) -> None:
    await add_user(site.db, "u_phone_guy", site.clock.now(), name="赵六", phone="13912345678")
    await site.login(STAFF)
    for q in ("赵六", "1391234", "u_phone_guy"):
        body = await (await site.client.get("/staff/users", params={"q": q})).text()
        assert "赵六" in body and "群众丙" not in body, q


async def test_storage_lists_the_longest_waiting_first(site: Site) -> None:
    now = site.clock.now()
    async with site.db.session() as s:
        a = await store.create(s, "p_a", "第一个", {}, now)
        b = await store.create(s, "p_b", "第二个", {}, now + timedelta(minutes=1))
        c = await store.create(s, "p_c", "第三个", {}, now + timedelta(minutes=2))
        await store.add(s, a, store.STAFF, "已答", now + timedelta(minutes=3), staff_openid=STAFF)
        await store.add(s, c, store.PERSON, "还在吗", now + timedelta(minutes=4))
    async with site.db.session() as s:
        rows = await store.waiting(s)
        assert [w.ticket.id for w in rows] == [b.id, c.id, a.id]
        assert rows[0].waiting_since == now + timedelta(minutes=1) and rows[2].waiting_since is None
        assert rows[1].messages == 2 and await store.count_open(s) == 3
        assert await store.last_staff(s, a.id) == STAFF and await store.last_staff(s, b.id) is None
        t = await s.get(Ticket, b.id)
        assert await store.close(s, t, now, "结束") and not await store.close(s, t, now, "又结束")
    async with site.db.session() as s:
        assert await store.set_leave(s, STAFF, True, by=ADMIN, now=now)
        assert not await store.set_leave(s, STAFF, True, by=ADMIN, now=now)
        assert not await store.set_leave(s, "nobody", False, by=ADMIN, now=now)
    async with site.db.session() as s:
        assert [u.openid for u in await store.on_duty(s)] == [ADMIN]
        assert (await s.execute(select(func.count()).select_from(store.TicketMessage))).scalar_one() == 6


async def test_a_photo_as_the_first_message_opens_the_ticket_with_a_note(site: Site) -> None:
    assert "请直接输入" in (await site.chat(PUBLIC, "人工") or "")
    reply = await site._post(image_xml(PUBLIC, 7101)) or ""
    assert "编号" in reply and "结束人工" in reply
    async with site.db.session() as s:
        (t,) = (await s.execute(select(Ticket))).scalars()
        assert t.text.startswith("［图片］") and [m.kind for m in await store.thread(s, t.id)] == ["image"]


async def test_a_chat_reply_outside_the_48_hour_window_says_how_it_will_travel(site: Site) -> None:
    tid = await _open(site)
    site.clock.advance(hours=49)
    reply = await site.chat(STAFF, f"回复 {tid} 您的补办材料已收到") or ""
    assert f"已回复 {tid} 号" in reply and "超过 48 小时" in reply and "模板消息" in reply
    (push,) = await _pushes(site, PUBLIC, "ticket_reply")
    assert "您的补办材料已收到" in push.payload["text"]
    async with site.db.session() as s:
        (a,) = (await s.execute(select(StaffAudit).where(StaffAudit.action == "ticket.reply"))).scalars()
        assert a.via == "chat" and a.actor == STAFF and a.target_id == str(tid)


async def test_a_person_who_unfollowed_is_shown_as_unreachable(site: Site) -> None:
    tid = await _open(site)
    await site.event(PUBLIC, "unsubscribe")
    await site.login(STAFF)
    page = await (await site.client.get(f"/staff/inbox/{tid}")).text()
    assert "对方已取消关注本公众号" in page
