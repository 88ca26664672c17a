"""SMS for roster members without WeChat (issue 17, item 4), on SQLite and PostgreSQL.

A call-up reaches each unbound member once by SMS (through the outbox, to the fake SMS gateway) with an
opaque answer link; replies come back through ``POST /sms/inbound`` (HMAC-signed, timestamp window,
message id remembered): 去不了 is recorded as 不能到 once however often the gateway retries, the
member gets a confirmation by SMS, and staff see who was reached and who answered by SMS (roster,
status text, console board, CLI). A forged or stale request records nothing.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.clock import FakeClock
from bot.config import Config
from bot.fake_wechat import FakeWeChatServer, templates_of
from bot.outbox import build_sender
from bot.sms import inbound_request, sign
from flows.callup import service, steps, texts
from flows.callup.roster import RosterRow
from storage import sms as sms_store
from storage.callup import CallUp, CallUpAnswer, CallUpEvent, Member
from storage.db import Database
from storage.linktokens import LinkToken
from storage.models import OutboxMessage
from tests.callup.conftest import T0, roster_rows, seed
from tests.conftest import ROOT, make_config
from tests.helpers import app_client, viewer_cookie
from tests.outbox.conftest import SMS_SECRET, FakeSmsGateway

TEAM = ("城关镇一队", "城关镇")
ZHANG, LI = "13700000001", "13700000002"  # on the roster, no WeChat


def _roster() -> list[RosterRow]:
    rows = roster_rows([TEAM], 3)  # 队员0000..0002, bound
    rows += [RosterRow(line=50, team=TEAM[0], name="老张", phone=ZHANG, skills=["驾驶"], township=TEAM[1], openid=None),
             RosterRow(line=51, team=TEAM[0], name="老李", phone=LI, skills=[], township=TEAM[1], openid=None)]
    return rows


@pytest.fixture
async def gw() -> AsyncIterator[FakeSmsGateway]:
    g = await FakeSmsGateway().start()
    yield g
    await g.stop()


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeChatServer]:
    async with FakeWeChatServer() as server:
        yield server


@pytest.fixture
async def seeded(db_url: str) -> str:
    db = Database(db_url)
    try:
        await seed(db, _roster())
    finally:
        await db.close()
    return db_url


def _config(db_url: str, fake: FakeWeChatServer, gw: FakeSmsGateway | None, **over: Any) -> Config:
    sms = {"sms__webhook_url": gw.url, "sms__hmac_secret": SMS_SECRET} if gw is not None else {}
    cfg = make_config(db_url, bot__fallback_flow="help", wechat__api_base=fake.base_url,
                      wechat__appid=fake.state.appid, **{**sms, **over})
    fake.state.add_templates(templates_of(cfg))
    return cfg


async def _create(runtime: Any, needed: int = 3) -> CallUp:
    async with runtime.db.session() as s:
        team = (await s.execute(select(Member.team_id).where(Member.phone == ZHANG))).scalar_one()
        spec = service.CallupSpec(kind="防汛", title="防汛集结", place="城关镇大堤", assemble_at=T0 + timedelta(hours=1),
                                  needed=needed, team_ids=[team])
        return await service.create_callup(s, runtime.services, spec, runtime.clock.now())


async def _post(client: Any, runtime: Any, phone: str, text: str, message_id: str, *, secret: str = SMS_SECRET,
                ts: int | None = None, signature: str | None = None) -> tuple[int, dict[str, Any]]:
    body, headers = inbound_request(secret, phone, text, message_id=message_id,
                                    ts=service.epoch(runtime.clock.now()) if ts is None else ts)
    if signature is not None:
        headers["X-Vetbot-Signature"] = signature
    resp = await client.post("/sms/inbound", data=body, headers=headers)
    return resp.status, await resp.json()


async def _count(runtime: Any, model: Any, *where: Any) -> int:
    async with runtime.db.session() as s:
        return int((await s.execute(select(func.count()).select_from(model).where(*where))).scalar() or 0)


async def _roster_of(runtime: Any, callup_id: int) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    async with runtime.db.session() as s:
        c = await s.get(CallUp, callup_id)
        assert c is not None
        r = await service.roster(s, runtime.services, c, runtime.clock.now())
        return r, await service.roster_members(s, c), texts.roster_text(c, r, runtime.config.bot.timezone)


def _path(url: str) -> str:
    return url[url.index("/", len("http://")):]


async def test_callup_reaches_unbound_members_by_sms_and_an_sms_answer_is_recorded_once_and_shown(
        seeded: str, fake: FakeWeChatServer, gw: FakeSmsGateway) -> None:
    cfg = _config(seeded, fake, gw)
    async with app_client(cfg, FakeClock(T0)) as (client, runtime):
        sender = build_sender(cfg, runtime.db, runtime.clock, worker="sms-test")
        try:
            c = await _create(runtime)
            await sender.deliver_due()
            to = sorted(m["phone"] for m in gw.accepted)
            assert to == [ZHANG, LI]  # the bound members went by WeChat, not SMS
            zhang = next(m for m in gw.accepted if m["phone"] == ZHANG)
            assert "【应急集结】防汛集结" in zhang["text"] and "老张" in zhang["text"] and "1到 2晚到 3不能到" in zhang["text"]
            link = re.search(r"https?://\S+/r/([A-Za-z0-9_-]+)", zhang["text"])
            assert link is not None and "." not in link.group(1)  # opaque: no readable claims
            assert link.group(1) not in next(m for m in gw.accepted if m["phone"] == LI)["text"]  # per member
            # Staff were told, and nobody has to be phoned.
            r, members, status = await _roster_of(runtime, c.id)
            assert r["unreachable"] == 0 and r["sms"] == {"sent": 2, "waiting": 0, "failed": 0, "answered": 0}
            assert "未绑定微信、已发短信：2 人，短信回复 0 人" in status and "需电话通知" not in status
            async with runtime.db.session() as s:
                created = (await s.execute(select(CallUpEvent.detail).where(CallUpEvent.kind == "created"))).scalar_one()
            assert (created["unbound"], created["sms"]) == (2, 2)
            assert steps.Targeted(5, 0, 2, 2).words() == "通知 5 人（其中 2 人未绑定微信，已发短信）"

            # Escalation reminders go to WeChat only: still one SMS per member.
            runtime.clock.advance(minutes=30)
            async with runtime.db.session() as s:
                assert await service.run_step(s, runtime.services, c.id, runtime.clock.now()) == "renotify"
            await sender.deliver_due()
            assert sorted(m["phone"] for m in gw.accepted) == [ZHANG, LI]

            # 去不了 from the member's phone as the gateway writes it, retried by the gateway: recorded once.
            status_code, answer = await _post(client, runtime, "+86 137 0000 0001", "俺去不了，腰扭了", "gw-1")
            assert status_code == 200 and answer["outcome"] == "recorded" and "已记录：不能到" in answer["reply"]
            status_code, again = await _post(client, runtime, "+86 137 0000 0001", "俺去不了，腰扭了", "gw-1")
            assert status_code == 200 and again == {"ok": True, "outcome": "duplicate", "reply": ""}
            zhang_id = next(m["member_id"] for m in members if m["phone"] == ZHANG)
            assert await _count(runtime, CallUpAnswer, CallUpAnswer.member_id == zhang_id) == 1
            await sender.deliver_due()
            replies = [m for m in gw.accepted if m["phone"] == ZHANG and "已记录" in m["text"]]
            assert len(replies) == 1 and "已记录：不能到" in replies[0]["text"]

            # The board shows it: 不能到, answered by SMS.
            r, members, status = await _roster_of(runtime, c.id)
            assert r["declined"] == 1 and r["sms"]["answered"] == 1
            zhang_row = next(m for m in members if m["phone"] == ZHANG)
            assert zhang_row["status"] == "declined" and zhang_row["by_sms"] and zhang_row["via"] == "sms"
            assert zhang_row["sms"] == "sent"
            assert "不能到 1" in status and "短信回复 1 人" in status
            page = await (await client.get(_path(service.roster_link(cfg, c, runtime.clock.now())),
                                           cookies={"vb_who": await viewer_cookie(runtime, "staff_for_roster_0001", staff=True)})).text()
            assert "老张" in page and "短信回复" in page and "老李" in page and "已发短信" in page
        finally:
            await sender.close()


async def test_forged_stale_or_unsigned_inbound_sms_is_refused_and_records_nothing(
        seeded: str, fake: FakeWeChatServer, gw: FakeSmsGateway) -> None:
    cfg = _config(seeded, fake, gw)
    async with app_client(cfg, FakeClock(T0)) as (client, runtime):
        await _create(runtime)
        now = service.epoch(runtime.clock.now())
        body, _ = inbound_request(SMS_SECRET, ZHANG, "去不了", message_id="x", ts=now)
        cases = [
            dict(secret="not-the-secret"),                       # signed with another key: forged
            dict(signature=""),                                  # no signature
            dict(signature=sign(SMS_SECRET, body + b" ")),       # a genuine signature of another body
            dict(signature="sha256=" + "0" * 64),
            dict(ts=now - 3600),                                 # well signed, but an hour old: a replay
            dict(ts=now + 3600),
        ]
        for i, kw in enumerate(cases):
            status, answer = await _post(client, runtime, ZHANG, "去不了", f"forged-{i}", **kw)  # type: ignore[arg-type]
            assert status == 403 and answer["ok"] is False, kw
        resp = await client.post("/sms/inbound", data=b"not json", headers={"X-Vetbot-Signature": sign(SMS_SECRET, b"not json")})
        assert resp.status == 400
        assert await _count(runtime, CallUpAnswer) == 0
        assert await _count(runtime, sms_store.SmsInbound) == 0
        assert await _count(runtime, OutboxMessage, OutboxMessage.purpose == "sms_reply") == 0
    # Without sms.hmac_secret nothing can be checked: every inbound SMS is refused.
    cfg = _config(seeded, fake, None)
    async with app_client(cfg, FakeClock(T0)) as (client, runtime):
        status, answer = await _post(client, runtime, ZHANG, "去不了", "no-secret")
        assert status == 403 and "hmac_secret" in answer["error"]
        assert await _count(runtime, sms_store.SmsInbound) == 0


async def test_concurrent_webhook_retries_record_one_answer_and_one_reply(
        seeded: str, fake: FakeWeChatServer, gw: FakeSmsGateway) -> None:
    cfg = _config(seeded, fake, gw)
    async with app_client(cfg, FakeClock(T0)) as (client, runtime):
        c = await _create(runtime)
        results = await asyncio.gather(*(_post(client, runtime, LI, "2 晚半个钟头", "retried") for _ in range(6)))
        outcomes = sorted(a["outcome"] for s, a in results if s == 200)
        assert outcomes == ["duplicate"] * 5 + ["recorded"], results
        _r, members, _ = await _roster_of(runtime, c.id)
        li = next(m for m in members if m["phone"] == LI)
        assert li["status"] == "late" and li["eta_min"] == 30
        assert await _count(runtime, CallUpAnswer, CallUpAnswer.member_id == li["member_id"]) == 1
        assert await _count(runtime, OutboxMessage, OutboxMessage.purpose == "sms_reply") == 1
        # A new message (another id) changes the answer: the last answer wins.
        status, answer = await _post(client, runtime, LI, "1", "second")
        assert status == 200 and answer["outcome"] == "recorded" and "已记录：到" in answer["reply"]
        assert (await _roster_of(runtime, c.id))[0]["confirmed"] == 1


async def test_unknown_phone_no_open_callup_and_unclear_words_record_nothing_and_get_a_polite_reply(
        seeded: str, fake: FakeWeChatServer, gw: FakeSmsGateway) -> None:
    cfg = _config(seeded, fake, gw)
    async with app_client(cfg, FakeClock(T0)) as (client, runtime):
        sender = build_sender(cfg, runtime.db, runtime.clock, worker="sms-test")
        try:
            # No call-up yet: a roster member and a stranger get the same polite words.
            s1, a1 = await _post(client, runtime, ZHANG, "到", "m1")
            s2, a2 = await _post(client, runtime, "13811112222", "到", "m2")
            assert (s1, s2) == (200, 200) and a1["outcome"] == a2["outcome"] == "unknown"
            assert a1["reply"] == a2["reply"] == texts.SMS_NOTHING_OPEN
            c = await _create(runtime)
            _s3, a3 = await _post(client, runtime, "13811112222", "到", "m3")
            assert a3["outcome"] == "unknown"
            _s4, a4 = await _post(client, runtime, ZHANG, "你们几点开始？", "m4")
            assert a4["outcome"] == "unclear" and "1 到 / 2 晚到 / 3 不能到" in a4["reply"]
            assert await _count(runtime, CallUpAnswer) == 0
            await sender.deliver_due()
            # One polite reply per phone and hour: an auto-responder cannot start an endless exchange.
            assert sum(1 for m in gw.accepted if m["phone"] == "13811112222") == 1
            runtime.clock.advance(hours=1)
            assert (await _post(client, runtime, "13811112222", "到", "m3b"))[1]["outcome"] == "unknown"
            await sender.deliver_due()
            assert sum(1 for m in gw.accepted if m["phone"] == "13811112222") == 2
            assert any(m["phone"] == ZHANG and "没看懂" in m["text"] for m in gw.accepted)
            # After the call-up closes, an answer is not recorded and the member is told it is over.
            async with runtime.db.session() as s:
                await service.close_callup(s, runtime.services, c.id, "cli", runtime.clock.now())
            _s5, a5 = await _post(client, runtime, ZHANG, "到", "m5")
            assert a5["outcome"] == "unknown" and await _count(runtime, CallUpAnswer) == 0
        finally:
            await sender.close()


async def test_sms_answer_link_opens_the_answer_page_and_records_via_sms_link(
        seeded: str, fake: FakeWeChatServer, gw: FakeSmsGateway) -> None:
    cfg = _config(seeded, fake, gw)
    async with app_client(cfg, FakeClock(T0)) as (client, runtime):
        c = await _create(runtime)
        async with runtime.db.session() as s:
            payloads = (await s.execute(select(OutboxMessage.payload).where(
                OutboxMessage.purpose == "callup_sms"))).scalars().all()
            (payload,) = [p for p in payloads if p["sms_to"] == ZHANG]
            assert await s.scalar(select(func.count()).select_from(LinkToken)) >= 2
        path = _path(payload["url"])
        page = await client.get(path)
        body = await page.text()
        # Outside WeChat the page first asks who holds the phone (bot/web/viewer.py); an answer before
        # that records nothing.
        assert page.status == 200 and "手机号码后四位" in body and "老张" not in body
        page = await client.post(path, data={"gate": "digits", "digits": ZHANG[-4:]})
        body = await page.text()
        assert page.status == 200 and "老张" in body and ">到</button>" in body
        resp = await client.post(path, data={"a": "yes"}, allow_redirects=False)
        assert resp.status == 303
        _, members, status = await _roster_of(runtime, c.id)
        zhang = next(m for m in members if m["phone"] == ZHANG)
        assert zhang["status"] == "confirmed" and zhang["via"] == "sms_link" and zhang["by_sms"]
        assert "短信回复 1 人" in status
        # A made-up token is refused; an expired one says so.
        resp = await client.get("/r/" + "A" * 32)
        assert resp.status in (400, 404) and "链接无效" in await resp.text()
        runtime.clock.advance(hours=cfg.callup.link_ttl_h + 1)
        resp = await client.get(path)
        assert resp.status == 410 and "回复短信" in await resp.text()


async def test_without_sms_set_up_unbound_members_are_left_to_a_phone_call(
        seeded: str, fake: FakeWeChatServer) -> None:
    cfg = _config(seeded, fake, None)
    async with app_client(cfg, FakeClock(T0)) as (_client, runtime):
        c = await _create(runtime)
        assert await _count(runtime, OutboxMessage, OutboxMessage.purpose == "callup_sms") == 0
        r, _, status = await _roster_of(runtime, c.id)
        assert r["unreachable"] == 2 and "未绑定微信、需电话通知：2 人" in status and "短信" not in status


async def test_sms_inbound_storage_claims_a_message_id_once(db: Database, clock: FakeClock) -> None:
    async with db.session() as s:
        assert await sms_store.claim(s, "id-1", clock.now())
        assert not await sms_store.claim(s, "id-1", clock.now())
        assert await sms_store.claim(s, "x" * 500, clock.now())  # any length: stored as its hash
        await sms_store.settle(s, "id-1", sms_store.RECORDED, member_id=7, callup_id=3, recorded_as="declined")
    async with db.session() as s:
        row = await s.get(sms_store.SmsInbound, sms_store.message_key("id-1"))
        assert row is not None and (row.outcome, row.member_id, row.callup_id, row.recorded_as) == (
            "recorded", 7, 3, "declined")
    async with db.session() as s:
        assert not await sms_store.claim(s, "id-1", clock.now())  # still remembered after commit


async def test_vetbot_sms_simulate_posts_a_signed_message_and_callup_status_shows_sms(
        seeded: str, fake: FakeWeChatServer, gw: FakeSmsGateway) -> None:
    cfg = _config(seeded, fake, gw)
    async with app_client(cfg, FakeClock(T0)) as (client, runtime):
        c = await _create(runtime)
        url = str(client.make_url("/sms/inbound"))
        env = {"VETBOT_DATABASE__URL": seeded, "VETBOT_SMS__WEBHOOK_URL": gw.url,
               "VETBOT_SMS__HMAC_SECRET": SMS_SECRET, "VETBOT_WECHAT__API_BASE": fake.base_url,
               "PATH": "/usr/bin:/bin"}

        async def vetbot(*args: str) -> tuple[int, str, str]:
            p = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot.cli", *args, "-c",
                                                     str(ROOT / "config.example.yaml"), env=env, cwd=str(ROOT),
                                                     stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await p.communicate()
            return p.returncode or 0, out.decode(), err.decode()

        # The CLI's clock is the real one: the fake clock's time is given as --ts.
        ts = str(service.epoch(runtime.clock.now()))
        code, out, err = await vetbot("sms", "simulate", "--from", ZHANG, "--url", url, "--id", "cli-1", "--ts", ts,
                                      "--json", "去不了")
        assert code == 0, err
        assert json.loads(out)["outcome"] == "recorded"
        code, out, err = await vetbot("sms", "simulate", "--from", ZHANG, "--url", url, "--id", "cli-1", "--ts", ts,
                                      "去不了")
        assert code == 0 and out.strip() == "duplicate"
        code, out, err = await vetbot("callup", "status", str(c.id), "--members")
        assert code == 0, err
        assert "短信回复 1 人" in out
        line = next(x for x in out.splitlines() if "老张" in x)
        assert "不能到" in line and "(短信回复)" in line and "(未绑定·短信待发)" in line
        line = next(x for x in out.splitlines() if "老李" in x)
        assert "未回复" in line and "(未绑定·短信待发)" in line


async def test_members_who_answered_by_sms_are_told_by_sms_when_the_callup_closes(
        seeded: str, fake: FakeWeChatServer, gw: FakeSmsGateway) -> None:
    cfg = _config(seeded, fake, gw)
    async with app_client(cfg, FakeClock(T0)) as (client, runtime):
        sender = build_sender(cfg, runtime.db, runtime.clock, worker="sms-test")
        try:
            c = await _create(runtime)
            assert (await _post(client, runtime, ZHANG, "马上到", "z1"))[1]["outcome"] == "recorded"
            async with runtime.db.session() as s:
                _, r, closed_now = await service.close_callup(s, runtime.services, c.id, "cli", runtime.clock.now())
            assert closed_now and r["told"] == 1
            await sender.deliver_due()
            told = [m for m in gw.accepted if "【集结结束】" in m["text"]]
            assert [m["phone"] for m in told] == [ZHANG]  # 老李 never answered: not told
        finally:
            await sender.close()


async def test_failing_callup_sms_alert_staff_through_the_auditor(
        seeded: str, fake: FakeWeChatServer, gw: FakeSmsGateway) -> None:
    cfg = _config(seeded, fake, gw, callup__audit_min_failed=2)
    async with app_client(cfg, FakeClock(T0)) as (_client, runtime):
        sender = build_sender(cfg, runtime.db, runtime.clock, worker="sms-test")
        try:
            c = await _create(runtime)
            gw.fail_next = [403, 403]  # a wrong secret or URL at the provider: permanent
            await sender.deliver_due()
            r, members, status = await _roster_of(runtime, c.id)
            assert r["sms"]["failed"] == 2 and r["unreachable"] == 2  # back to a phone call
            assert "2 人失败" in status and "需电话通知：2 人" in status
            assert {m["sms"] for m in members if not m["bound"]} == {"failed"}
            async with runtime.db.session() as s:
                alerts = await service.audit(s, runtime.services, runtime.clock.now())
            assert [a.problem for a in alerts] == ["failing"] and "2/5" in alerts[0].text
        finally:
            await sender.close()


async def test_staff_call_up_in_wechat_chat_reaches_unbound_members_by_sms_and_status_shows_sms_answers(
        seeded: str, fake: FakeWeChatServer, gw: FakeSmsGateway) -> None:
    from tests.helpers import chat_session

    cfg = _config(seeded, fake, gw)
    async with chat_session(cfg) as chat:
        sender = build_sender(cfg, chat.runtime.db, chat.clock, worker="sms-test")
        try:
            for text in ("发起集结", "5", "城关镇大堤", "30分钟后", "3", "城关镇一队"):
                await chat.send("staff_demo", text)
            reply = await chat.send("staff_demo", "2")  # not a drill
            assert "将通知 5 人" in (reply or ""), reply
            reply = await chat.send("staff_demo", "1")
            assert "已通知 5 人" in (reply or "") and "其中 2 人未绑定微信，已发短信" in (reply or ""), reply
            assert "请电话通知" not in (reply or "")
            await sender.deliver_due()
            assert sorted(m["phone"] for m in gw.accepted if "【应急集结】" in m["text"]) == [ZHANG, LI]
            body, headers = inbound_request(SMS_SECRET, ZHANG, "去不了", message_id="chat-1",
                                            ts=service.epoch(chat.clock.now()))
            base = chat.url[:chat.url.index("/", len("http://"))]
            async with chat.http.post(base + "/sms/inbound", data=body, headers=headers) as resp:
                assert resp.status == 200 and (await resp.json())["outcome"] == "recorded"
            status = await chat.send("staff_demo", "集结状态")
            assert "不能到 1" in (status or "") and "短信回复 1 人" in (status or ""), status
        finally:
            await sender.close()


async def test_console_preview_and_board_show_who_was_reached_and_who_answered_by_sms(
        seeded: str, fake: FakeWeChatServer, gw: FakeSmsGateway) -> None:
    from bot.sim import WeChatSide
    from tests.console.conftest import STAFF, Site, add_user

    cfg = _config(seeded, fake, gw, qa__use_encoder="false")
    clock = FakeClock(T0)
    async with app_client(cfg, clock) as (client, runtime):
        sender = build_sender(cfg, runtime.db, runtime.clock, worker="sms-test")
        try:
            await add_user(runtime.db, STAFF, T0, roles="staff", name="工作人员乙")
            site = Site(client, runtime, fake, cfg, clock, WeChatSide(cfg))
            csrf = await site.login(STAFF)
            async with runtime.db.session() as s:
                team = (await s.execute(select(Member.team_id).where(Member.phone == ZHANG))).scalar_one()
            form = {"csrf": csrf, "kind": "防汛", "title": "", "place": "城关镇防汛仓库", "time": "30分钟后",
                    "needed": "3", "scope": "teams", "teams": str(team), "drill": "no"}
            body = await (await client.post("/staff/callups/preview", data=form)).text()
            assert "将马上通知 <b>5</b> 人" in body and "其中未绑定微信的 2 人发短信" in body
            resp = await client.post("/staff/callups/create", data={**form, "do": "create"}, allow_redirects=False)
            assert resp.status == 303
            board_url = resp.headers["Location"].split("?")[0]
            await sender.deliver_due()
            assert (await _post(client, runtime, ZHANG, "去不了", "console-1"))[1]["outcome"] == "recorded"
            body = await (await client.get(board_url)).text()
            assert 'id="c-sms">2<' in body and 'id="c-sms-answered">1<' in body and 'id="c-unbound">0<' in body
            assert "未回复 · 未绑定微信，已发短信" in body and "未绑定微信，请电话通知" not in body
            declined = body[body.index('aria-label="不能到"'):]
            assert "老张" in declined and "短信回复" in declined[:declined.index("</section>")]
            audit = await (await client.get(board_url + "/audit")).text()
            assert "老张：回复“不能到”，记为不能到 （短信）" in audit and f"SMS {ZHANG}" in audit
        finally:
            await sender.close()


@pytest.mark.browser
async def test_sms_link_answer_page_and_board_in_chromium_on_a_phone(
        seeded: str, fake: FakeWeChatServer, gw: FakeSmsGateway, browser_page: Any, tmp_path: Any) -> None:
    """The link from the SMS opened in a phone browser (outside WeChat): 不能到 is one tap; the staff board
    then shows the SMS figures and marks. Screenshots: sms-answer-phone.png, sms-board-phone.png."""
    import os
    import shutil

    from bot.sim import WeChatSide
    from tests.console.conftest import STAFF, Site, add_user

    cfg = _config(seeded, fake, gw, qa__use_encoder="false")
    clock = FakeClock(T0)
    async with app_client(cfg, clock) as (client, runtime):
        sender = build_sender(cfg, runtime.db, runtime.clock, worker="sms-test")
        try:
            c = await _create(runtime)
            await sender.deliver_due()
            (sms_text,) = [m["text"] for m in gw.accepted if m["phone"] == ZHANG]
            link = re.search(r"https?://\S+", sms_text)
            assert link is not None
            page = browser_page
            await page.goto(str(client.make_url(_path(link.group(0)))))
            assert "手机号码后四位" in await page.inner_text("main")
            await page.get_by_label("手机号码后四位").fill(ZHANG[-4:])
            await page.get_by_role("button", name="确认").click()
            await page.wait_for_load_state()
            assert "老张" in await page.inner_text("main")
            await page.screenshot(path=str(tmp_path / "sms-answer-phone.png"), full_page=True)
            await page.get_by_role("button", name="不能到").click()
            await page.wait_for_load_state()
            assert "已记录：不能到" in await page.inner_text("main")
            assert (await _post(client, runtime, LI, "晚到半小时", "b-1"))[1]["outcome"] == "recorded"
            await add_user(runtime.db, STAFF, T0, roles="staff", name="工作人员乙")
            site = Site(client, runtime, fake, cfg, clock, WeChatSide(cfg))
            raw = await site.link(STAFF)
            await page.goto(str(client.make_url(f"/staff/login/link?t={raw}")))
            await page.get_by_role("button", name="登录工作人员后台").click()
            await page.wait_for_url("**/staff/")
            await page.goto(str(client.make_url(f"/staff/callups/{c.id}")))
            main = await page.inner_text("main")
            assert "已发短信" in main and "短信回复" in main
            await page.screenshot(path=str(tmp_path / "sms-board-phone.png"), full_page=True)
            keep = os.environ.get("VETBOT_SHOTS")
            if keep:
                for name in ("sms-answer-phone.png", "sms-board-phone.png"):
                    shutil.copy(tmp_path / name, os.path.join(keep, name))
        finally:
            await sender.close()


async def test_callup_audit_trail_names_the_phone_of_each_sms_and_the_sms_answer(
        seeded: str, fake: FakeWeChatServer, gw: FakeSmsGateway) -> None:
    from flows.callup import audit

    cfg = _config(seeded, fake, gw)
    async with app_client(cfg, FakeClock(T0)) as (client, runtime):
        c = await _create(runtime)
        await _post(client, runtime, ZHANG, "3", "audit-1")
        async with runtime.db.session() as s:
            rows = await audit.trail(s, c.id, cfg.bot.timezone)
        lines = [audit.line(r) for r in rows or []]
        assert any(f"callup_sms -> SMS {ZHANG}: pending" in x for x in lines), lines
        assert any("answer  老张" in x and "不能到" in x and "via sms" in x for x in lines), lines


async def test_a_standby_member_without_wechat_is_told_by_sms_when_promoted(
        seeded: str, fake: FakeWeChatServer, gw: FakeSmsGateway) -> None:
    cfg = _config(seeded, fake, gw)
    async with app_client(cfg, FakeClock(T0)) as (client, runtime):
        sender = build_sender(cfg, runtime.db, runtime.clock, worker="sms-test")
        try:
            c = await _create(runtime, needed=1)
            assert (await _post(client, runtime, ZHANG, "1", "p1"))[1]["outcome"] == "recorded"
            _, answer = await _post(client, runtime, LI, "到", "p2")
            assert "备用" in answer["reply"]
            runtime.clock.advance(minutes=1)
            await _post(client, runtime, ZHANG, "不去了，有事", "p3")
            r, members, _ = await _roster_of(runtime, c.id)
            assert next(m for m in members if m["phone"] == LI)["status"] == "confirmed" and r["state"] == "filled"
            await sender.deliver_due()
            assert [m["phone"] for m in gw.accepted if "原确认人员有变动" in m["text"]] == [LI]
        finally:
            await sender.close()


async def test_a_callup_sms_the_gateway_could_not_take_is_retried_and_sent_once(
        seeded: str, fake: FakeWeChatServer, gw: FakeSmsGateway) -> None:
    cfg = _config(seeded, fake, gw)
    async with app_client(cfg, FakeClock(T0)) as (_client, runtime):
        sender = build_sender(cfg, runtime.db, runtime.clock, worker="sms-test")
        try:
            c = await _create(runtime)
            gw.fail_next = [503]  # the provider is busy for one message
            await sender.deliver_due()
            assert len(gw.accepted) == 1
            r, _, status = await _roster_of(runtime, c.id)
            assert r["sms"] == {"sent": 1, "waiting": 1, "failed": 0, "answered": 0} and r["unreachable"] == 0
            assert "1 人发送中" in status
            runtime.clock.advance(minutes=10)
            await sender.deliver_due()
            await sender.deliver_due()
            assert sorted(m["phone"] for m in gw.accepted) == [ZHANG, LI]
            assert (await _roster_of(runtime, c.id))[0]["sms"]["sent"] == 2
        finally:
            await sender.close()
