"""群发通知: who an audience covers and why (issue 14 item 15: `--role veteran` reached 1 of 11 followers
because the role is set only by finishing 我的信息), the same words in the console and `--dry-run`; the
chat wizard (标题 → 正文 → 对象 → 确认, 返回 / 取消, the role checked at every step); composing in the
console through to a delivery report built from what the fake WeChat API really answered. SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.clock import fmt_local
from bot.fake_wechat import fake_openid
from bot.outbox import build_sender
from flows.broadcast import service
from storage.broadcast import Broadcast
from storage.console import StaffAudit, set_role
from storage.models import OutboxMessage, User
from tests.conftest import ROOT
from tests.console.conftest import ADMIN, PUBLIC, STAFF, T0, Site, add_user

TEMPLATE = "/cgi-bin/message/template/send"
KEFU = "/cgi-bin/message/custom/send"


async def _followers(site: Site, n: int = 8) -> list[str]:
    """``n`` more followers: one registered as a veteran, two as 'other', the rest unregistered; with the
    admin, staff member and 群众丙 of the fixture that makes 11."""
    ids = [fake_openid(100 + i) for i in range(n)]
    for i, o in enumerate(ids):
        kind = "veteran" if i == 0 else ("other" if i in (1, 2) else None)
        await add_user(site.db, o, T0, roles="veteran" if kind == "veteran" else "", kind=kind,
                       township="竹阳街道" if i < 3 else None, name=f"关注者{i}", phone=f"1380000{i:04d}")
    await add_user(site.db, fake_openid(199), T0, subscribed=False, roles="veteran", kind="veteran")
    return ids


async def test_an_audience_by_role_says_who_it_covers_and_why(site: Site) -> None:
    await _followers(site)
    async with site.db.session() as s:
        r = await service.resolve(s, service.Audience(role="veteran"))
        assert r.count == 1
        assert r.lines[0].startswith("11 位关注者中 1 位登记为退役军人；其余 10 位中 2 位登记为其他身份，8 位未登记身份")
        assert "我的信息" in r.lines[0]
        r = await service.resolve(s, service.Audience())
        assert r.count == 11 and r.lines == ["共 11 位关注者（另有 1 位已取消关注，收不到）。"]
        r = await service.resolve(s, service.Audience(township="竹阳街道"))
        assert r.count == 3 and r.lines[0] == "11 位关注者中 3 位在“我的信息”登记的乡镇是“竹阳街道”；其余 8 位未登记乡镇。"
        r = await service.resolve(s, service.Audience(role="veteran", township="竹阳街道"))
        assert r.count == 1 and len(r.lines) == 2 and r.label == "身份：退役军人，乡镇：竹阳街道"
        r = await service.resolve(s, service.Audience(role="family"))
        assert r.count == 0 and "其余 11 位中" in r.lines[0]


async def test_the_exact_words_of_the_report_when_nobody_else_registered(site: Site) -> None:
    for i in range(8):  # the situation issue 14 describes: 11 followers, 1 veteran, nobody else registered
        await add_user(site.db, fake_openid(300 + i), T0, roles="veteran" if i == 0 else "",
                       kind="veteran" if i == 0 else None)
    async with site.db.session() as s:
        r = await service.resolve(s, service.Audience(role="veteran"))
    assert r.lines[0].startswith("11 位关注者中 1 位登记为退役军人；其余 10 位未登记身份")


async def test_an_audience_by_team_names_members_to_phone(site: Site) -> None:
    from tests.callup.conftest import TEAMS, roster_rows, seed

    rows = roster_rows(TEAMS[:1], 4)
    rows[3].openid = None  # one member never bound WeChat
    teams = await seed(site.db, rows, T0)
    async with site.db.session() as s:  # one unfollowed (the roster import made their user row)
        (await s.get(User, rows[2].openid)).subscribed = False  # type: ignore[union-attr]
    async with site.db.session() as s:
        r = await service.resolve(s, service.Audience(team_id=teams[TEAMS[0][0]]))
    assert r.count == 2 and r.label == f"队伍：{TEAMS[0][0]}"
    assert r.lines == [f"“{TEAMS[0][0]}”名册共 4 人，其中 2 位已绑定微信、能收到；1 位未绑定微信，收不到通知，请电话告知；"
                       "1 位已取消关注。"]


async def test_dry_run_explains_the_audience_like_the_console(site: Site, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.cli import main

    await _followers(site)
    monkeypatch.setenv("VETBOT_DATABASE__URL", site.config.database.url)

    def vetbot(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main(list(argv))
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    config = str(ROOT / "config.example.yaml")
    code, out, err = await asyncio.to_thread(vetbot, "broadcast", "-c", config, "--title", "通知", "--text", "正文",
                                             "--role", "veteran", "--dry-run")
    assert code == 0, err
    assert "符合条件的关注者 1 人" in out and "11 位关注者中 1 位登记为退役军人" in out
    code, out, _ = await asyncio.to_thread(vetbot, "broadcast", "-c", config, "--title", "通知", "--text", "正文",
                                           "--role", "veteran", "--json", "--dry-run")
    assert json.loads(out)["explain"][0].startswith("11 位关注者中 1 位")
    code, out, _ = await asyncio.to_thread(vetbot, "broadcast", "-c", config, "--title", "队伍通知", "--text", "x",
                                           "--team", "没有这个队")
    assert code == 2
    code, out, _ = await asyncio.to_thread(vetbot, "broadcast", "-c", config, "--title", "通知", "--text", "正文",
                                           "--role", "veteran")
    assert code == 0 and "已排队 1 条" in out
    async with site.db.session() as s:
        b = (await s.execute(select(Broadcast))).scalar_one()
        assert b.via == "cli" and b.recipients == 1 and b.audience == {"role": "veteran"}
        entry = (await s.execute(select(StaffAudit))).scalar_one()
        assert entry.action == "broadcast.send" and entry.actor.startswith("cli")


async def test_broadcast_from_chat(site: Site) -> None:
    await _followers(site)
    assert "标题" in (await site.chat(STAFF, "群发通知") or "")
    assert "正文" in (await site.chat(STAFF, "防汛演练通知") or "")
    reply = await site.chat(STAFF, "明天上午9点在城关镇防汛仓库集合演练。")
    assert reply is not None and "1. 全部关注者" in reply
    reply = await site.chat(STAFF, "返回")  # back to 正文
    assert reply is not None and "正文" in reply
    reply = await site.chat(STAFF, "明天上午9点在城关镇防汛仓库集合演练，请准时参加。")
    reply = await site.chat(STAFF, "2")  # 按身份
    assert reply is not None and "退役军人" in reply
    reply = await site.chat(STAFF, "1")  # 退役军人
    assert reply is not None and "将发送给 1 人" in reply and "11 位关注者中 1 位登记为退役军人" in reply
    reply = await site.chat(STAFF, "1")  # 确认发送
    assert reply is not None and "已开始发送给 1 人" in reply
    async with site.db.session() as s:
        (row,) = (await s.execute(select(OutboxMessage))).scalars()
        b = (await s.execute(select(Broadcast))).scalar_one()
    assert row.openid == fake_openid(100) and row.ref_type == "broadcast" and row.ref_id == b.id
    assert row.payload["text"] == "【防汛演练通知】明天上午9点在城关镇防汛仓库集合演练，请准时参加。"
    assert b.via == "chat" and b.created_by == STAFF
    # 取消 at any step sends nothing; an audience nobody matches sends you back to choose again.
    await site.chat(STAFF, "群发通知")
    await site.chat(STAFF, "第二条")
    await site.chat(STAFF, "内容")
    await site.chat(STAFF, "2")
    reply = await site.chat(STAFF, "2")  # 军属/家属: nobody registered
    assert reply is not None and "没有人能收到" in reply and "1. 全部关注者" in reply
    reply = await site.chat(STAFF, "取消")
    assert reply is not None and "已退出" in reply
    async with site.db.session() as s:
        assert len(list((await s.execute(select(OutboxMessage))).scalars())) == 1
    # Someone without the staff role cannot start it.
    assert "标题" not in (await site.chat(PUBLIC, "群发通知") or "")


async def test_a_staff_member_whose_role_was_removed_mid_wizard_cannot_send(site: Site) -> None:
    await _followers(site)
    await site.chat(STAFF, "群发通知")
    await site.chat(STAFF, "通知")
    await site.chat(STAFF, "正文内容")
    reply = await site.chat(STAFF, "1")
    assert reply is not None and "将发送给 11 人" in reply
    async with site.db.session() as s:
        user = await s.get(User, STAFF)
        await set_role(s, user, "staff", False, by=ADMIN, via="console", now=site.clock.now())  # type: ignore[arg-type]
    reply = await site.chat(STAFF, "1")
    assert reply is not None and "没有发送" in reply
    async with site.db.session() as s:
        assert not list((await s.execute(select(OutboxMessage))).scalars())


def _csrf(body: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]+)"', body)
    assert m
    return m.group(1)


async def test_compose_confirm_send_and_the_delivery_report(site: Site) -> None:
    ids = await _followers(site)
    # WeChat's side: one follower blocked the account (43004 on template sends), one is in the kefu window.
    site.fake.state.set_users({ids[3]: {"followed": False}})
    async with site.db.session() as s:
        (await s.get(User, ids[4])).last_message_at = site.clock.now()  # type: ignore[union-attr]
    csrf = await site.login(ADMIN)
    # A warning (汛情): the one kind of notice WeChat lets a template message carry to everyone.
    form = {"csrf": csrf, "title": "清明祭扫安排", "text": "4月4日上午8点在烈士陵园集合，<b>请</b>准时参加。",
            "url": "", "audience": "all", "when": "now", "kind": "warning"}
    # Errors come back at their field, nothing is queued.
    resp = await site.client.post("/staff/broadcasts/preview", data={**form, "title": "", "url": "ftp://x"})
    body = await resp.text()
    assert resp.status == 400 and 'id="title-err"' in body and 'id="url-err"' in body and 'aria-invalid="true"' in body
    resp = await site.client.post("/staff/broadcasts/preview", data=form)
    body = await resp.text()
    assert resp.status == 200 and 'id="recipients">11<' in body and "共 11 位关注者" in body
    assert "灾害、故障预警" in body and 'name="kind" value="warning"' in body  # carried to the send form
    assert "&lt;b&gt;请&lt;/b&gt;" in body and "<b>请</b>" not in body  # autoescape
    resp = await site.client.post("/staff/broadcasts/send", data={**form, "do": "send"}, allow_redirects=False)
    assert resp.status == 303
    report = resp.headers["Location"]
    async with site.db.session() as s:
        b = (await s.execute(select(Broadcast))).scalar_one()
    assert report == f"/staff/broadcasts/{b.id}?done=queued"
    body = await (await site.client.get(report)).text()
    assert 'id="n-pending">11<' in body and "正在逐个发送" in body
    # The outbox sender delivers through the fake WeChat API.
    sender = build_sender(site.config, site.db, site.clock)
    try:
        await sender.deliver_due()
    finally:
        await sender.close()
    kefu = [c for c in site.fake.state.calls if c["path"] == KEFU]
    templates = [c for c in site.fake.state.calls if c["path"] == TEMPLATE]
    assert [c["body"]["touser"] for c in kefu] == [ids[4]]
    assert len(templates) == 10 and all(c["body"]["data"]["thing1"]["value"] == "清明祭扫安排" for c in templates)
    refused = [c for c in templates if c["errcode"] == 43004]
    assert [c["body"]["touser"] for c in refused] == [ids[3]]
    body = await (await site.client.get(report)).text()
    assert 'id="n-sent">10<' in body and 'id="n-failed">1<' in body and 'id="n-pending">0<' in body
    assert "客服消息" in body and "模板消息" in body and "用户未关注公众号" in body
    assert "关注者3" in body and "13800000003" in body  # the person not reached, with a phone to call
    # The list shows the notice with its counts; the fragment the page refreshes from works alone.
    assert "清明祭扫安排" in await (await site.client.get("/staff/broadcasts")).text()
    part = await (await site.client.get(f"/staff/broadcasts/{b.id}/delivery")).text()
    assert "<html" not in part and 'id="n-sent">10<' in part and "data-refresh-stop" in part
    async with site.db.session() as s:
        entry = (await s.execute(select(StaffAudit).where(StaffAudit.action == "broadcast.send"))).scalar_one()
    assert entry.actor == ADMIN and entry.via == "console" and entry.target_id == str(b.id)


async def test_an_ordinary_notice_says_why_people_outside_the_window_were_not_reached(site: Site) -> None:
    # WeChat's rule since 2023: a template message nobody asked for is for fault and disaster warnings only.
    ids = await _followers(site)
    async with site.db.session() as s:
        (await s.get(User, ids[4])).last_message_at = site.clock.now()  # type: ignore[union-attr]
    csrf = await site.login(ADMIN)
    form = {"csrf": csrf, "title": "座谈会通知", "text": "周五下午3点在局会议室开座谈会。", "url": "", "audience": "all",
            "when": "now", "kind": "notice", "do": "send"}
    resp = await site.client.post("/staff/broadcasts/send", data=form, allow_redirects=False)
    assert resp.status == 303
    sender = build_sender(site.config, site.db, site.clock)
    try:
        await sender.deliver_due()
    finally:
        await sender.close()
    assert not [c for c in site.fake.state.calls if c["path"] == TEMPLATE]
    assert [c["body"]["touser"] for c in site.fake.state.calls if c["path"] == KEFU] == [ids[4]]
    body = await (await site.client.get(resp.headers["Location"])).text()
    assert 'id="n-sent">1<' in body and "普通通知按微信规定不能用模板消息发送" in body


async def test_schedule_and_take_back(site: Site) -> None:
    await _followers(site)
    csrf = await site.login(STAFF)
    later = site.clock.now() + timedelta(days=1)
    at = fmt_local(later, "Asia/Shanghai", "%Y-%m-%dT%H:%M")
    form = {"csrf": csrf, "title": "座谈会", "text": "改期另行通知", "audience": "role", "role": "veteran",
            "when": "later", "at": at, "do": "send"}
    past = fmt_local(site.clock.now() - timedelta(hours=1), "Asia/Shanghai", "%Y-%m-%dT%H:%M")
    resp = await site.client.post("/staff/broadcasts/preview", data={**form, "at": past})
    assert resp.status == 400 and "已经过去了" in await resp.text()
    resp = await site.client.post("/staff/broadcasts/send", data=form, allow_redirects=False)
    report = resp.headers["Location"].split("?")[0]
    body = await (await site.client.get(report)).text()
    assert "定时发送" in body and "撤回" in body
    sender = build_sender(site.config, site.db, site.clock)
    try:
        await sender.deliver_due()  # not due yet
        assert not [c for c in site.fake.state.calls if c["path"] == TEMPLATE]
        resp = await site.client.post(report + "/cancel", data={"csrf": csrf}, allow_redirects=False)
        assert resp.status == 303
        body = await (await site.client.get(resp.headers["Location"])).text()
        assert "已撤回 1 条" in body and "已撤回</span>" in body
        site.clock.advance(days=2)
        await sender.deliver_due()
        assert not [c for c in site.fake.state.calls if c["path"] == TEMPLATE]
    finally:
        await sender.close()
    async with site.db.session() as s:
        actions = [a.action for a in (await s.execute(select(StaffAudit).order_by(StaffAudit.id))).scalars()]
    assert actions[-2:] == ["broadcast.schedule", "broadcast.cancel"]


async def test_a_notice_to_a_team_from_the_console(site: Site) -> None:
    from tests.callup.conftest import TEAMS, roster_rows, seed

    teams = await seed(site.db, roster_rows(TEAMS, 2), T0)
    csrf = await site.login(STAFF)
    tid = teams[TEAMS[1][0]]
    resp = await site.client.post("/staff/broadcasts/preview", data={
        "csrf": csrf, "title": "队伍通知", "text": "今晚训练", "audience": "team", "team": str(tid), "when": "now"})
    body = await resp.text()
    assert resp.status == 200 and 'id="recipients">2<' in body and f"“{TEAMS[1][0]}”名册共 2 人" in body
    resp = await site.client.post("/staff/broadcasts/preview", data={
        "csrf": csrf, "title": "队伍通知", "text": "今晚训练", "audience": "team", "team": "99999", "when": "now"})
    assert resp.status == 400 and "没有找到这支队伍" in await resp.text()
    _ = PUBLIC


async def test_a_notice_taken_back_with_the_outbox_command_shows_as_taken_back(site: Site) -> None:
    from storage.outbox_repo import cancel_broadcast

    await _followers(site)
    later = site.clock.now() + timedelta(days=1)
    async with site.db.session() as s:
        q = await service.queue(s, site.clock.now(), title="改期", text="另行通知", at=later, by=ADMIN, via="console")
    assert (await cancel_broadcast(site.db, q.key))["cancelled"] == 11  # what `vetbot outbox cancel KEY` does
    await site.login(STAFF)
    body = await (await site.client.get("/staff/broadcasts")).text()
    assert "已撤回</span>" in body
    # Pushes cancelled because people unfollowed are not "taken back".
    async with site.db.session() as s:
        q2 = await service.queue(s, site.clock.now(), title="通知", text="内容", by=ADMIN, via="console")
        for row in (await s.execute(select(OutboxMessage).where(OutboxMessage.ref_id == q2.broadcast_id))).scalars():
            row.status, row.last_error = "cancelled", "user unsubscribed"
    body = await (await site.client.get(f"/staff/broadcasts/{q2.broadcast_id}")).text()
    assert 'id="state">已完成<' in body and "已取消关注" in body


async def test_a_large_notice_is_queued_in_chunks_from_every_entry_point(site: Site, monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A county-wide notice must not hold the database for seconds (on SQLite every chat turn waits for the
    one writer): above FAN_OUT_INLINE recipients the pushes are queued in chunks, each its own transaction,
    by the console (in the background), the CLI (at once) or the broadcast_fanout tick (chat, restarts)."""
    from bot.scheduler import run_tick
    from bot.web.console import CONSOLE
    from flows.api import ticks

    monkeypatch.setattr(service, "FAN_OUT_INLINE", 3)
    monkeypatch.setattr(service, "FAN_OUT_CHUNK", 2)
    chunks: list[int] = []
    real_enqueue = service.enqueue

    async def counting(session, pushes, now):  # type: ignore[no-untyped-def]
        chunks.append(len(pushes))
        return await real_enqueue(session, pushes, now)

    monkeypatch.setattr(service, "enqueue", counting)
    await _followers(site)

    async def rows(bid: int) -> int:
        async with site.db.session() as s:
            return len(list((await s.execute(select(OutboxMessage).where(OutboxMessage.ref_id == bid))).scalars()))

    # Console: the request records the notice; the pushes follow in the background, two at a time.
    csrf = await site.login(ADMIN)
    resp = await site.client.post("/staff/broadcasts/send", data={
        "csrf": csrf, "title": "全县通知", "text": "内容", "audience": "all", "when": "now", "do": "send"},
        allow_redirects=False)
    bid = int(resp.headers["Location"].split("/")[-1].split("?")[0])
    await asyncio.gather(*site.client.app[CONSOLE].tasks)
    assert await rows(bid) == 11 and chunks == [2, 2, 2, 2, 2, 1]
    async with site.db.session() as s:
        assert (await s.get(Broadcast, bid)).queued_at is not None  # type: ignore[union-attr]
    assert "已完成" in await (await site.client.get("/staff/broadcasts")).text() or "发送中" in \
        await (await site.client.get("/staff/broadcasts")).text()
    # Chat: the turn records it; the tick queues the pushes.
    await site.chat(STAFF, "群发通知")
    await site.chat(STAFF, "第二条全县通知")
    await site.chat(STAFF, "内容")
    await site.chat(STAFF, "1")
    reply = await site.chat(STAFF, "1")
    assert reply is not None and "分批排队" in reply
    async with site.db.session() as s:
        chat_bid = (await s.execute(select(Broadcast.id).where(Broadcast.via == "chat"))).scalar_one()
    assert await rows(chat_bid) == 0
    body = await (await site.client.get(f"/staff/broadcasts/{chat_bid}")).text()
    assert "准备中" in body and "还有 11 人的推送在准备中" in body
    (tick,) = [t for t in ticks() if t.name == "broadcast_fanout"]
    await run_tick(tick, site.db, site.runtime.services)
    assert await rows(chat_bid) == 11
    await run_tick(tick, site.db, site.runtime.services)  # nothing left to do, nothing twice
    assert await rows(chat_bid) == 11
    # A fan-out cut short (the process stopped) is finished by the tick once it is two minutes old; a notice
    # taken back before that gets nothing more.
    async with site.db.session() as s:
        cut = await service.queue(s, site.clock.now(), title="第三条", text="内容", by=ADMIN, via="console")
        gone = await service.queue(s, site.clock.now(), title="第四条", text="内容", by=ADMIN, via="console")
    async with site.db.session() as s:
        await service.cancel(s, gone.broadcast_id or 0, site.clock.now(), by=ADMIN)
    await run_tick(tick, site.db, site.runtime.services)
    assert await rows(cut.broadcast_id or 0) == 0  # another process may still be at it
    site.clock.advance(minutes=3)
    await run_tick(tick, site.db, site.runtime.services)
    assert await rows(cut.broadcast_id or 0) == 11 and await rows(gone.broadcast_id or 0) == 0
    # The command line queues in chunks at once.
    from bot.cli import main

    monkeypatch.setenv("VETBOT_DATABASE__URL", site.config.database.url)

    def vetbot(*argv: str) -> int:
        try:
            main(list(argv))
        except SystemExit as e:
            return int(e.code or 0)
        return 0

    capsys.readouterr()
    assert await asyncio.to_thread(vetbot, "broadcast", "-c", str(ROOT / "config.example.yaml"), "--title", "第五条",
                                   "--text", "内容") == 0
    assert "已排队 11 条" in capsys.readouterr().out


async def test_chat_broadcast_by_township_takes_the_short_name(site: Site) -> None:
    """群发通知 → 按乡镇 → 竹阳 reaches the followers of 竹阳街道 (a walk-through got 0 people for 城关 → 城关镇)."""
    await _followers(site)
    await site.chat(STAFF, "群发通知")
    await site.chat(STAFF, "通知")
    await site.chat(STAFF, "正文内容")
    reply = await site.chat(STAFF, "3")
    assert reply is not None and "竹阳街道" in reply
    reply = await site.chat(STAFF, "竹阳")
    assert reply is not None and "将发送给 3 人" in reply and "竹阳街道" in reply
