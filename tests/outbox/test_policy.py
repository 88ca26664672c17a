"""Channel policy and error handling of the outbox sender, against the fake WeChat API (SQLite and PG)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from bot.clock import FakeClock
from bot.config import Config, TemplateSpec
from bot.fake_wechat import FakeWeChatServer, FaultRule
from bot.outbox import OutboxSender, TemplateRenderer, build_sender
from storage.db import Database
from storage.outbox import Push
from tests.outbox.conftest import (
    KEFU_PATH,
    SUBSCRIBE_PATH,
    TEMPLATE_PATH,
    FakeSmsGateway,
    add_user,
    calls,
    notice,
    outbox_config,
    queue,
    row_of,
    rows,
    set_user,
    uid,
    user_of,
)


async def test_template_when_no_window_records_msgid_and_fields(db: Database, sender: OutboxSender,
                                                                fake: FakeWeChatServer, clock: FakeClock) -> None:
    now = clock.now()
    await add_user(db, uid(1), now)
    await queue(db, now, notice(uid(1), url="http://127.0.0.1:8080/p/1"))
    report = await sender.deliver_due(now)
    assert (report.claimed, report.sent) == (1, 1)
    row = await row_of(db, uid(1))
    assert row.status == "sent" and row.channel == "template" and row.attempts == 1 and row.sent_at == now
    sent = calls(fake, TEMPLATE_PATH)
    assert len(sent) == 1 and not calls(fake, KEFU_PATH)
    body = sent[0]["body"]
    assert body["touser"] == uid(1) and body["template_id"].startswith("TPL_NOTICE")
    # Keyword fields only (WeChat shows no first/remark since 2023-05-04), the time written short.
    assert body["data"] == {"thing1": {"value": "通知"}, "thing2": {"value": "本周六上午9点在局里开会"},
                            "time3": {"value": "4月4日 09:00"}}
    assert body["url"] == "http://127.0.0.1:8080/p/1"
    # The gateway matches TEMPLATESENDJOBFINISH on this id.
    assert row.wechat_msgid is not None and row.wechat_msgid > 0


async def test_kefu_inside_the_48h_window_and_quota_of_five(db: Database, sender: OutboxSender,
                                                            fake: FakeWeChatServer, clock: FakeClock) -> None:
    now = clock.now()
    await add_user(db, uid(2), now, last_message_at=now - timedelta(hours=47))
    await queue(db, now, *[notice(uid(2), key=f"k{i}") for i in range(7)])
    await sender.deliver_due(now)
    got = [r.channel for r in await rows(db)]
    assert got.count("kefu") == 5 and got.count("template") == 2
    assert len(calls(fake, KEFU_PATH)) == 5
    assert (await user_of(db, uid(2))).kefu_sent == 5
    # The user writes again: the dispatcher resets the count, so kefu is back.
    await set_user(db, uid(2), kefu_sent=0, last_message_at=now)
    await queue(db, now, notice(uid(2), key="after"))
    await sender.deliver_due(now)
    assert (await rows(db))[-1].channel == "kefu"


async def test_kefu_window_closes_after_48h(db: Database, sender: OutboxSender, fake: FakeWeChatServer,
                                            clock: FakeClock) -> None:
    now = clock.now()
    await add_user(db, uid(3), now, last_message_at=now - timedelta(hours=48, seconds=1))
    await queue(db, now, notice(uid(3)))
    await sender.deliver_due(now)
    assert (await row_of(db, uid(3))).channel == "template"
    assert not calls(fake, KEFU_PATH)


async def test_event_window_one_minute_three_messages(db: Database, sender: OutboxSender,
                                                      fake: FakeWeChatServer, clock: FakeClock) -> None:
    now = clock.now()
    await add_user(db, uid(4), now, last_event_at=now - timedelta(seconds=30))
    await queue(db, now, *[notice(uid(4), key=f"e{i}") for i in range(4)])
    await sender.deliver_due(now)
    assert [r.channel for r in await rows(db)].count("kefu") == 3
    await add_user(db, uid(5), now, last_event_at=now - timedelta(seconds=61))
    await queue(db, now, notice(uid(5)))
    await sender.deliver_due(now)
    assert (await row_of(db, uid(5))).channel == "template"


async def test_kefu_text_carries_the_link(db: Database, sender: OutboxSender, fake: FakeWeChatServer,
                                          clock: FakeClock) -> None:
    now = clock.now()
    await add_user(db, uid(6), now, last_message_at=now)
    await queue(db, now, notice(uid(6), url="http://127.0.0.1:8080/a/xyz"))
    await sender.deliver_due(now)
    content = calls(fake, KEFU_PATH)[0]["body"]["text"]["content"]
    assert content.startswith("本周六上午9点在局里开会") and 'href="http://127.0.0.1:8080/a/xyz"' in content


async def test_45015_falls_back_to_template_at_once(db: Database, sender: OutboxSender, fake: FakeWeChatServer,
                                                    clock: FakeClock) -> None:
    now = clock.now()
    # Our records say the window is open, WeChat says it is not (e.g. the user wrote from another device…).
    await add_user(db, uid(7), now, last_message_at=now - timedelta(minutes=5))
    fake.state.set_users({uid(7): {"kefu_window": False}})
    await queue(db, now, notice(uid(7)))
    report = await sender.deliver_due(now)
    row = await row_of(db, uid(7))
    assert report.sent == 1 and row.status == "sent" and row.channel == "template"
    assert row.skipped_channels == ["kefu"] and row.attempts == 1
    assert len(calls(fake, KEFU_PATH)) == 1 and len(calls(fake, TEMPLATE_PATH)) == 1


async def test_45047_falls_back_to_template(db: Database, sender: OutboxSender, fake: FakeWeChatServer,
                                            clock: FakeClock) -> None:
    now = clock.now()
    await add_user(db, uid(8), now, last_message_at=now)
    fake.state.set_users({uid(8): {"kefu_quota": 0}})
    await queue(db, now, notice(uid(8)))
    await sender.deliver_due(now)
    row = await row_of(db, uid(8))
    assert row.channel == "template" and row.skipped_channels == ["kefu"]


async def test_45009_backs_off_pauses_the_path_and_sends_later(db: Database, sender: OutboxSender,
                                                                fake: FakeWeChatServer, clock: FakeClock) -> None:
    now = clock.now()
    for i in (10, 11):
        await add_user(db, uid(i), now)
    fake.state.add_fault(FaultRule(path=TEMPLATE_PATH, errcode=45009, count=1))
    await queue(db, now, notice(uid(10), priority=1))
    await sender.deliver_due(now)
    row = await row_of(db, uid(10))
    assert row.status == "pending" and row.attempts == 1 and row.due_at > now
    assert "45009" in (row.last_error or "") and "rid:" not in (row.last_error or "")
    # The daily quota is gone: other pushes on that API wait too, without calling WeChat.
    await queue(db, now, notice(uid(11)))
    before = len(calls(fake, TEMPLATE_PATH))
    await sender.deliver_due(now)
    other = await row_of(db, uid(11))
    assert other.status == "pending" and other.attempts == 0 and other.due_at >= row.due_at - timedelta(seconds=1)
    assert len(calls(fake, TEMPLATE_PATH)) == before
    # Nothing goes out before the new due time…
    clock.set(row.due_at - timedelta(seconds=1))
    assert (await sender.deliver_due()).claimed == 0
    # …and everything goes out after it.
    clock.set(max(row.due_at, other.due_at) + timedelta(seconds=1))
    report = await sender.deliver_due()
    assert report.sent == 2
    assert [r.status for r in await rows(db)] == ["sent", "sent"]


async def test_45011_retries_after_a_minute(db: Database, sender: OutboxSender, fake: FakeWeChatServer,
                                            clock: FakeClock) -> None:
    now = clock.now()
    await add_user(db, uid(12), now)
    fake.state.add_fault(FaultRule(path=TEMPLATE_PATH, errcode=45011, count=1))
    await queue(db, now, notice(uid(12)))
    await sender.deliver_due(now)
    row = await row_of(db, uid(12))
    assert row.status == "pending" and row.due_at >= now + timedelta(seconds=60)
    await sender.deliver_due(row.due_at)
    assert (await row_of(db, uid(12))).status == "sent"


async def test_dropped_connections_and_5xx_retry_with_growing_backoff(db: Database, sender: OutboxSender,
                                                                      fake: FakeWeChatServer, clock: FakeClock) -> None:
    now = clock.now()
    await add_user(db, uid(13), now)
    fake.state.add_fault(FaultRule(path=TEMPLATE_PATH, drop=True, count=1))
    fake.state.add_fault(FaultRule(path=TEMPLATE_PATH, status=502, count=1))
    await queue(db, now, notice(uid(13)))
    delays = []
    t = now
    for _ in range(2):
        await sender.deliver_due(t)
        row = await row_of(db, uid(13))
        assert row.status == "pending"
        delays.append((row.due_at - t).total_seconds())
        t = row.due_at
    # Equal jitter: attempt n waits between base*2^(n-1)/2 and base*2^(n-1) (base 2 s).
    assert 1 <= delays[0] <= 2 and 2 <= delays[1] <= 4
    await sender.deliver_due(t)
    row = await row_of(db, uid(13))
    assert row.status == "sent" and row.attempts == 3
    assert len(calls(fake, TEMPLATE_PATH)) == 3


async def test_transient_errors_give_up_after_max_attempts(db: Database, sender: OutboxSender,
                                                           fake: FakeWeChatServer, clock: FakeClock) -> None:
    now = clock.now()
    await add_user(db, uid(14), now)
    fake.state.add_fault(FaultRule(path=TEMPLATE_PATH, errcode=-1, count=-1))
    await queue(db, now, notice(uid(14)))
    t = now
    for _ in range(4):  # outbox__max_attempts = 4 in these tests
        await sender.deliver_due(t)
        t += timedelta(hours=1)
    row = await row_of(db, uid(14))
    assert row.status == "failed" and row.attempts == 4
    assert row.last_error == "gave up after 4 attempts: template: -1 system error"
    assert len(calls(fake, TEMPLATE_PATH)) == 4


@pytest.mark.parametrize(("setup", "reason"), [
    ("unfollowed", "template: 43004 require subscribe"),
    ("bad_openid", "template: 40003 invalid openid"),
    ("bad_template", "no channel (template: 40037 invalid template_id)"),
])
async def test_permanent_failures_are_recorded_at_once(db: Database, sender: OutboxSender, fake: FakeWeChatServer,
                                                       clock: FakeClock, setup: str, reason: str) -> None:
    now = clock.now()
    openid = "zhangsan" if setup == "bad_openid" else uid(15)
    await add_user(db, openid, now)
    if setup == "unfollowed":
        fake.state.set_users({uid(15): {"followed": False}})
    if setup == "bad_template":
        fake.state.add_fault(FaultRule(path=TEMPLATE_PATH, errcode=40037, count=1))
    await queue(db, now, notice(openid))
    report = await sender.deliver_due(now)
    row = await row_of(db, openid)
    assert report.failed == 1 and row.status == "failed" and row.attempts == 1
    assert row.last_error == reason
    # Never retried.
    await sender.deliver_due(now + timedelta(days=2))
    assert len(calls(fake, TEMPLATE_PATH)) == 1


async def test_unsubscribed_users_are_cancelled_without_a_call(db: Database, sender: OutboxSender,
                                                               fake: FakeWeChatServer, clock: FakeClock) -> None:
    now = clock.now()
    await add_user(db, uid(16), now, subscribed=False, last_message_at=now)
    await queue(db, now, notice(uid(16)))
    report = await sender.deliver_due(now)
    row = await row_of(db, uid(16))
    assert report.cancelled == 1 and row.status == "cancelled" and row.last_error == "user unsubscribed"
    assert not fake.state.calls


async def test_no_channel_when_no_template_no_window_no_phone(db_url: str, db: Database, fake: FakeWeChatServer,
                                                              clock: FakeClock) -> None:
    cfg = outbox_config(db_url, fake)
    del cfg.templates["notice"]
    sender = build_sender(cfg, db, clock)
    try:
        now = clock.now()
        await add_user(db, uid(17), now)
        await queue(db, now, notice(uid(17)))
        await sender.deliver_due(now)
        row = await row_of(db, uid(17))
        assert row.status == "failed" and row.last_error.startswith("no channel (no template for notice")
        assert not fake.state.calls
    finally:
        await sender.close()


async def test_no_channel_names_the_refusals(db_url: str, db: Database, fake: FakeWeChatServer,
                                             clock: FakeClock) -> None:
    cfg = outbox_config(db_url, fake)
    del cfg.templates["notice"]
    sender = build_sender(cfg, db, clock)
    try:
        now = clock.now()
        await add_user(db, uid(18), now, last_message_at=now)
        fake.state.set_users({uid(18): {"kefu_window": False}})
        await queue(db, now, notice(uid(18)))
        await sender.deliver_due(now)
        row = await row_of(db, uid(18))
        assert row.status == "failed"
        assert row.last_error == "no channel (kefu: 45015 response out of time limit or subscription is canceled)"
    finally:
        await sender.close()


async def test_unknown_recipient_gets_a_template(db: Database, sender: OutboxSender, fake: FakeWeChatServer,
                                                 clock: FakeClock) -> None:
    now = clock.now()  # no users row at all (e.g. imported roster): no window, assume followed
    await queue(db, now, notice(uid(19)))
    await sender.deliver_due(now)
    assert (await row_of(db, uid(19))).channel == "template"


async def test_priority_first_then_oldest(db_url: str, db: Database, fake: FakeWeChatServer, clock: FakeClock) -> None:
    cfg = outbox_config(db_url, fake, outbox__concurrency=1, outbox__batch_size=1)
    sender = build_sender(cfg, db, clock)
    try:
        now = clock.now()
        await queue(db, now - timedelta(minutes=5), notice(uid(20), priority=8))
        await queue(db, now - timedelta(minutes=1), notice(uid(21), priority=0))
        await queue(db, now - timedelta(minutes=3), notice(uid(22), priority=0))
        await queue(db, now + timedelta(minutes=1), notice(uid(23), priority=0))  # not due yet
        await sender.deliver_due(now)
        order = [c["body"]["touser"] for c in calls(fake, TEMPLATE_PATH)]
        assert order == [uid(22), uid(21), uid(20)]
    finally:
        await sender.close()


async def test_token_refused_is_recovered_once_and_the_push_goes_out(db: Database, sender: OutboxSender,
                                                                     fake: FakeWeChatServer, clock: FakeClock) -> None:
    now = clock.now()
    await add_user(db, uid(24), now)
    await queue(db, now, notice(uid(24), key="a"))
    await sender.deliver_due(now)
    first = sender.client.token_store
    assert first.fetches == 1
    fake.state.revoke("all")  # e.g. someone reset the secret: every token answers 40001
    await queue(db, now, notice(uid(24), key="b"))
    await sender.deliver_due(now)
    assert [r.status for r in await rows(db)] == ["sent", "sent"]
    errs = [c.get("errcode") for c in calls(fake, TEMPLATE_PATH)]
    assert errs == [0, 40001, 0]
    assert first.fetches == 2


async def test_token_fetch_failure_is_retried_not_failed(db: Database, sender: OutboxSender, fake: FakeWeChatServer,
                                                         clock: FakeClock) -> None:
    now = clock.now()
    await add_user(db, uid(25), now)
    fake.state.add_fault(FaultRule(path="/cgi-bin/stable_token", errcode=40125, count=1))
    await queue(db, now, notice(uid(25)))
    await sender.deliver_due(now)
    row = await row_of(db, uid(25))
    assert row.status == "pending" and "40125" in (row.last_error or "")
    await sender.deliver_due(row.due_at)
    assert (await row_of(db, uid(25))).status == "sent"


async def test_sms_when_no_template_with_hmac_checked_by_the_gateway(db_url: str, db: Database, fake: FakeWeChatServer,
                                                                     sms_gateway: FakeSmsGateway,
                                                                     clock: FakeClock) -> None:
    cfg = outbox_config(db_url, fake, sms__webhook_url=sms_gateway.url, sms__hmac_secret=sms_gateway.secret)
    del cfg.templates["notice"]
    sender = build_sender(cfg, db, clock)
    try:
        now = clock.now()
        await add_user(db, uid(26), now, phone="13800000026")
        await add_user(db, uid(27), now)  # no phone: nothing can reach this one
        await queue(db, now, notice(uid(26), url="http://127.0.0.1:8080/x"), notice(uid(27)))
        await sender.deliver_due(now)
        r26, r27 = await row_of(db, uid(26)), await row_of(db, uid(27))
        assert r26.status == "sent" and r26.channel == "sms"
        assert r27.status == "failed" and r27.last_error.startswith("no channel")
        assert sms_gateway.accepted == [{"phone": "13800000026",
                                         "text": "本周六上午9点在局里开会 http://127.0.0.1:8080/x"}]
        assert sms_gateway.keys == [r26.idempotency_key] and not sms_gateway.rejected
    finally:
        await sender.close()


async def test_sms_wrong_secret_is_a_permanent_failure_and_5xx_retries(db_url: str, db: Database,
                                                                        fake: FakeWeChatServer,
                                                                        sms_gateway: FakeSmsGateway,
                                                                        clock: FakeClock) -> None:
    cfg = outbox_config(db_url, fake, sms__webhook_url=sms_gateway.url, sms__hmac_secret="not-the-secret")
    del cfg.templates["notice"]
    sender = build_sender(cfg, db, clock)
    try:
        now = clock.now()
        await add_user(db, uid(28), now, phone="13800000028")
        await queue(db, now, notice(uid(28)))
        await sender.deliver_due(now)
        row = await row_of(db, uid(28))
        assert row.status == "failed" and row.last_error == "sms: HTTP 401 bad signature"
        assert sms_gateway.rejected == ["bad signature"] and not sms_gateway.accepted
    finally:
        await sender.close()
    cfg = outbox_config(db_url, fake, sms__webhook_url=sms_gateway.url, sms__hmac_secret=sms_gateway.secret)
    del cfg.templates["notice"]
    sender = build_sender(cfg, db, clock)
    try:
        now = clock.now()
        await add_user(db, uid(29), now, phone="13800000029")
        sms_gateway.fail_next = [503]
        await queue(db, now, notice(uid(29)))
        await sender.deliver_due(now)
        row = await row_of(db, uid(29))
        assert row.status == "pending" and row.last_error == "sms: HTTP 503 injected"
        await sender.deliver_due(row.due_at)
        assert (await row_of(db, uid(29))).status == "sent" and len(sms_gateway.accepted) == 1
    finally:
        await sender.close()


async def test_rows_claimed_by_a_dead_sender_are_handed_back(db: Database, sender: OutboxSender,
                                                             fake: FakeWeChatServer, clock: FakeClock) -> None:
    from storage.outbox_repo import claim_due

    now = clock.now()
    await queue(db, now, notice(uid(30)), notice(uid(31)))
    claimed, _ = await claim_due(db, now, 10, "dead-process")
    assert len(claimed) == 2
    if db.is_sqlite:
        # SQLite: a sender that did not start alone (see SenderLease) leaves them for the claim timeout…
        assert (await sender.deliver_due(now + timedelta(seconds=100))).claimed == 0
        report = await sender.deliver_due(now + timedelta(seconds=121))
    else:
        # PostgreSQL: "dead-process" holds no sender lock, so its rows come back at once.
        report = await sender.deliver_due(now)
    # …and the stuck try counts as an attempt.
    assert report.reclaimed == 2 and report.sent == 2
    assert all(r.attempts == 2 and r.status == "sent" for r in await rows(db))


async def test_result_of_a_reclaimed_row_is_not_written_by_the_old_owner(db: Database, clock: FakeClock) -> None:
    from storage.outbox_repo import Outcome, claim_due, reclaim_stale, record_outcomes

    now = clock.now()
    await queue(db, now, notice(uid(32)))
    (row,), _ = await claim_due(db, now, 10, "slow")
    await reclaim_stale(db, now + timedelta(seconds=200), 120, 8)
    (again,), _ = await claim_due(db, now + timedelta(seconds=200), 10, "fresh")
    assert again.id == row.id
    written = await record_outcomes(db, "slow", [Outcome(row.id, "failed", 1, now, last_error="late")])
    assert written == 0
    assert (await row_of(db, uid(32))).claimed_by == "fresh"


def test_template_placeholders_missing_render_empty_and_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    r = TemplateRenderer({"notice": TemplateSpec("T1", {"thing1": "{title}", "thing2": "{place}：{time}",
                                                        "thing3": "{title.__class__}"}, "{url}")})
    with caplog.at_level(logging.WARNING, logger="vetbot.outbox"):
        for _ in range(3):
            out = r.render("notice", {"text": "t", "data": {"title": "标题", "time": "9点"}})
    assert out.template_id == "T1" and out.url is None
    # A field left empty by a missing value is not sent at all (WeChat would refuse an empty value).
    assert out.data == {"thing1": "标题", "thing2": "：9点"}
    warnings = [rec.getMessage() for rec in caplog.records]
    assert len(warnings) == 3 and any("{place}" in w for w in warnings)


def test_template_bad_format_string_does_not_crash(caplog: pytest.LogCaptureFixture) -> None:
    r = TemplateRenderer({"notice": TemplateSpec("T1", {"thing1": "{title"}, "")})
    out = r.render("notice", {"text": "x", "data": {"title": "a"}})
    assert out.data == {"thing1": "{title"}


def test_retired_fields_are_never_sent() -> None:
    # A 1,170-member call-up once sent 2,340 first/remark fields nobody saw: the renderer drops them even
    # if a config got past the check.
    r = TemplateRenderer({"callup": TemplateSpec("T1", {"first": "{title}", "thing1": "{place}",
                                                        "remark": "请点击回复"}, "{url}")})
    out = r.render("callup", {"text": "x", "data": {"title": "集结", "place": "城南水文站"}})
    assert out.data == {"thing1": "城南水文站"}
    assert any("first" in n for n in out.notes) and any("remark" in n for n in out.notes)


@pytest.mark.parametrize(("fields", "data", "expected"), [
    # A title or a place keeps its start and ends with …, 20 characters in all.
    ({"thing1": "{place}"}, {"place": "城南水文站东侧二号堤坝北端集合点（沿河堤路进入）"},
     {"thing1": "城南水文站东侧二号堤坝北端集合点（沿河…"}),
    # A leading 【tag】 repeats the template's title: it goes first, so the words that differ survive.
    ({"thing1": "{title}"}, {"title": "【应急集结】城南河段防汛抢险（第二批）请立即出发"},
     {"thing1": "城南河段防汛抢险（第二批）请立即出发"}),
    ({"thing1": "{title}"}, {"title": "【应急集结】城南河段防汛"}, {"thing1": "【应急集结】城南河段防汛"}),
    # Line breaks and emoji go (WeChat drops them; we send what is shown).
    ({"thing1": "{content}"}, {"content": "今晚8点\n到局里🙂集合"}, {"thing1": "今晚8点 到局里集合"}),
    # Times in any of the forms features write them come out short; a date with its year for date.
    ({"time1": "{time}"}, {"time": "2026-07-01 21:30"}, {"time1": "7月1日 21:30"}),
    ({"time1": "{time}"}, {"time": "07月01日 21:30"}, {"time1": "7月1日 21:30"}),
    ({"date1": "{time}"}, {"time": "2026-04-05"}, {"date1": "2026年4月5日"}),
    # A phrase: at most 5 Chinese characters, nothing else.
    ({"phrase1": "{status}"}, {"status": "已确认到达现场"}, {"phrase1": "已确认到达"}),
    ({"phone_number1": "{phone}"}, {"phone": "电话：0818-1234567"}, {"phone_number1": "0818-1234567"}),
    ({"character_string1": "{code}"}, {"code": "编号A-1024"}, {"character_string1": "A-1024"}),
    ({"amount1": "{pay}"}, {"pay": "3,000元"}, {"amount1": "¥3000"}),
    # Not a time at all: left out rather than refused by WeChat (47003) for the whole message.
    ({"thing1": "{title}", "time2": "{deadline}"}, {"title": "岗位", "deadline": "长期有效"}, {"thing1": "岗位"}),
])
def test_values_are_shortened_by_type(fields: dict[str, str], data: dict[str, str], expected: dict[str, str]) -> None:
    from datetime import datetime

    r = TemplateRenderer({"notice": TemplateSpec("T", fields, "")})
    out = r.render("notice", {"text": "x", "data": data}, datetime(2026, 4, 4, 1, 0))
    assert out.data == expected
    assert all(len(v) <= 20 for v in out.data.values())


def test_full_time_style_writes_the_year() -> None:
    from datetime import datetime

    from bot.template_rules import Rules

    r = TemplateRenderer({"notice": TemplateSpec("T", {"time1": "{time}"}, "")}, rules=Rules(time_style="full"))
    out = r.render("notice", {"text": "x", "data": {"time": "07月01日 21:30"}}, datetime(2026, 4, 4, 1, 0))
    assert out.data == {"time1": "2026年7月1日 21:30"}


async def test_late_reply_template_gets_title_content_and_time_defaults(db: Database, sender: OutboxSender,
                                                                        fake: FakeWeChatServer,
                                                                        clock: FakeClock) -> None:
    from storage.outbox import Push

    now = clock.now()  # 2026-04-04 01:00 UTC = 09:00 in Shanghai
    long = "优待证在乡镇退役军人服务站办理，带上身份证、退役证和一寸照片两张，当场受理。"
    await queue(db, now, Push(openid=uid(40), purpose="late_reply", key="late:x", text=long))
    await sender.deliver_due(now)
    body = calls(fake, TEMPLATE_PATH)[0]["body"]
    data = body["data"]
    assert data["thing1"]["value"] == "您的消息已有回复"
    assert data["thing2"]["value"] == long[:19] + "…"
    assert data["time3"]["value"] == "4月4日 09:00"
    # No page of its own: the template links the whole text, signed for this person.
    assert "/msg/" in body["url"]
    r = TemplateRenderer({"x": TemplateSpec("T", {"time1": "{time}", "thing2": "{content}"}, "")})
    out = r.render("x", {"text": "t", "data": {"content": "自己的内容"}}, now)
    assert out.data == {"time1": "4月4日 09:00", "thing2": "自己的内容"}


async def test_rate_limiter_spaces_calls_per_path() -> None:
    from bot.outbox import RateLimiter

    t = [100.0]
    slept: list[float] = []

    async def sleep(d: float) -> None:
        slept.append(round(d, 6))

    lim = RateLimiter(10, time=lambda: t[0], sleep=sleep)
    for _ in range(3):
        await lim.acquire("/template")
    await lim.acquire("/kefu")  # another path has its own budget
    assert slept == [0.1, 0.2]
    t[0] += 1.0  # after a quiet second the next call goes at once
    await lim.acquire("/template")
    assert slept == [0.1, 0.2]
    assert await RateLimiter(0).acquire("x") is None


async def test_slow_pass_is_not_reclaimed_by_another_sender_regression_duplicates(
        db_url: str, db: Database, fake: FakeWeChatServer) -> None:
    # Two senders on PostgreSQL sent rows twice: rows queued in a busy sender for longer than the
    # claim timeout were handed to the other one. The heartbeat keeps a live sender's claims fresh.
    import asyncio

    from bot.clock import SystemClock
    from storage.outbox_repo import reclaim_stale

    cfg = outbox_config(db_url, fake, outbox__claim_timeout_s="0.3", outbox__rate_per_s="12",
                        outbox__concurrency="2")
    sender = build_sender(cfg, db, SystemClock())
    try:
        await queue(db, SystemClock().now(), *[notice(uid(70 + i)) for i in range(6)])
        reclaimed = 0

        async def other_sender() -> None:
            nonlocal reclaimed
            while not task.done():
                reclaimed += await reclaim_stale(db, SystemClock().now(), 0.3, 8)
                await asyncio.sleep(0.03)

        task = asyncio.create_task(sender.deliver_due())
        await asyncio.gather(task, other_sender())
        assert task.result().sent == 6 and reclaimed == 0
        assert len(calls(fake, TEMPLATE_PATH)) == 6
    finally:
        await sender.close()


@pytest.mark.parametrize("cut_after", [37, 81, 122])
async def test_sent_but_unrecorded_pushes_never_exceed_the_concurrency_regression_duplicates(
        db_url: str, db: Database, fake: FakeWeChatServer, cut_after: int) -> None:
    # Issue 14.10: results were committed in groups (up to 0.2 s or half a batch), so a kill repeated
    # far more pushes than were in flight (64 and 86 duplicates). Now a worker sends its next row only
    # once the result of its last one is committed: stop a fan-out at any point and at most
    # `concurrency` rows have reached WeChat without their result on disk.
    import asyncio

    from bot.clock import SystemClock

    fake.state.latency_ms = 5
    cfg = outbox_config(db_url, fake, outbox__concurrency="4", outbox__batch_size="40")
    sender = build_sender(cfg, db, SystemClock(), worker="cut")
    try:
        await queue(db, SystemClock().now(), *[notice(uid(200 + i), key="cut") for i in range(300)])
        task = asyncio.create_task(sender.deliver_due())
        for _ in range(30_000):
            if len(calls(fake, TEMPLATE_PATH)) >= cut_after or task.done():
                break
            await asyncio.sleep(0.001)
        task.cancel()  # what survives a kill is what was committed before it
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await sender.close()
    delivered = {c["body"]["touser"] for c in calls(fake, TEMPLATE_PATH)}  # reached WeChat, answered or not
    recorded = {r.openid for r in await rows(db) if r.status == "sent"}
    assert recorded <= delivered and len(delivered) >= cut_after
    assert len(delivered - recorded) <= 4


async def test_rows_of_a_pass_that_failed_to_record_go_out_at_the_next_pass(
        db: Database, sender: OutboxSender, fake: FakeWeChatServer, clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A pass whose results could not be written (the database went away) left its rows claimed by a
    # live sender, whose heartbeat kept them fresh: they waited for ever instead of going out again.
    import bot.outbox as outbox_mod

    real = outbox_mod.record_and_claim

    async def results_fail(db_: Database, worker: str, outcomes: Any, now: Any, limit: int) -> Any:
        if outcomes:
            raise ConnectionError("database went away")
        return await real(db_, worker, outcomes, now, limit)

    now = clock.now()
    await queue(db, now, notice(uid(80)), notice(uid(81)))
    async def writer_fails(self: Any, worker: str, outcomes: Any) -> int:
        raise ConnectionError("database went away")

    monkeypatch.setattr(outbox_mod, "record_and_claim", results_fail)
    monkeypatch.setattr(outbox_mod.ResultWriter, "write", writer_fails)  # PostgreSQL's results-only rounds
    with pytest.raises(ConnectionError):  # after its retries (1.4 s of backoff)
        await sender.deliver_due(now)
    assert [r.status for r in await rows(db)] == ["sending", "sending"]
    monkeypatch.undo()
    report = await sender.deliver_due(now + timedelta(seconds=1))
    assert report.reclaimed == 2 and report.sent == 2
    assert [r.status for r in await rows(db)] == ["sent", "sent"]


# -- 订阅通知 (subscribe notices) ---------------------------------------------------------------------


async def give_consent(db: Database, fake: FakeWeChatServer, openid: str, template_id: str, now, *,
                       kind: str = "long_term", ours: bool = True, wechat: bool = True) -> None:
    """The person accepted ``template_id`` in WeChat's popup: WeChat knows it, and (through the event) we do."""
    from storage.subscribe import Choice, record_choices

    if wechat:
        fake.state.templates.setdefault(template_id, {"type": "subscribe", "title": "", "fields": {}})["kind"] = kind
        fake.state.subscribe_choice(openid, template_id, "accept")
    if ours:
        async with db.session() as s:
            await record_choices(s, openid, [Choice(template_id, "accept")], now, scene="1",
                                 kinds={template_id: kind})


async def consent_row(db: Database, openid: str, template_id: str):  # type: ignore[no-untyped-def]
    from storage.subscribe import SubscribeConsent

    async with db.session() as s:
        return await s.get(SubscribeConsent, (openid, template_id))


def callup_push(openid: str, key: str = "c1") -> Push:
    return Push(openid=openid, purpose="callup", key=key, text="【应急集结】防汛 城南河段\n请回复 1 到 / 2 晚到 / 3 不能到",
                data={"title": "【应急集结】防汛·城南河段防汛抢险（第二批）", "place": "城南水文站东侧二号堤坝集合点",
                      "time": "07月01日 21:30", "content": "需要20人。请点击回复：到 / 晚到 / 不能到"},
                url="http://127.0.0.1:8080/r/abc", priority=0)


async def test_subscribe_notice_with_consent_goes_before_the_template(db: Database, sender: OutboxSender,
                                                                      fake: FakeWeChatServer, cfg: Config,
                                                                      clock: FakeClock) -> None:
    now = clock.now()
    sub_id = cfg.templates["callup"].subscribe.template_id
    await add_user(db, uid(50), now)
    await give_consent(db, fake, uid(50), sub_id, now)
    await queue(db, now, callup_push(uid(50)))
    await sender.deliver_due(now)
    row = await row_of(db, uid(50))
    assert row.status == "sent" and row.channel == "subscribe" and not calls(fake, TEMPLATE_PATH)
    (sent,) = calls(fake, SUBSCRIBE_PATH)
    body = sent["body"]
    assert body["touser"] == uid(50) and body["template_id"] == sub_id and body["page"] == "http://127.0.0.1:8080/r/abc"
    assert set(body["data"]) == {"thing1", "thing2", "time3"}
    assert all(len(v["value"]) <= 20 for v in body["data"].values())
    assert sent["rendered"]["fields"][0] == {"name": "thing1", "label": "集结事项", "value": "防汛·城南河段防汛抢险（第二批）"}
    # A long-term consent is kept for the next call-up.
    assert (await consent_row(db, uid(50), sub_id)).status == "accept"


async def test_one_time_consent_carries_one_notice(db: Database, sender: OutboxSender, fake: FakeWeChatServer,
                                                   cfg: Config, clock: FakeClock) -> None:
    now = clock.now()
    sub = cfg.templates["job_alert"].subscribe
    sub.kind = "one_time"
    await add_user(db, uid(51), now)
    await give_consent(db, fake, uid(51), sub.template_id, now, kind="one_time")
    await queue(db, now, notice(uid(51), key="j1", purpose="job_alert"), notice(uid(51), key="j2", purpose="job_alert"))
    await sender.deliver_due(now)
    assert sorted(r.channel for r in await rows(db)) == ["subscribe", "template"]
    assert len(calls(fake, SUBSCRIBE_PATH)) == 1  # never a second bizsend that WeChat would refuse
    c = await consent_row(db, uid(51), sub.template_id)
    assert c.credits == 0 and c.sent_count == 1


async def test_43101_falls_through_to_the_template_and_forgets_the_consent(db: Database, sender: OutboxSender,
                                                                           fake: FakeWeChatServer, cfg: Config,
                                                                           clock: FakeClock) -> None:
    now = clock.now()
    sub_id = cfg.templates["callup"].subscribe.template_id
    await add_user(db, uid(52), now)
    # We recorded a consent, but the person has since turned it off (and the change event got lost).
    await give_consent(db, fake, uid(52), sub_id, now, wechat=False)
    await queue(db, now, callup_push(uid(52)))
    await sender.deliver_due(now)
    row = await row_of(db, uid(52))
    assert row.status == "sent" and row.channel == "template" and row.skipped_channels == ["subscribe"]
    assert calls(fake, SUBSCRIBE_PATH)[0]["errcode"] == 43101
    c = await consent_row(db, uid(52), sub_id)
    assert c.status == "reject" and c.last_result == "43101"
    # The next call-up does not try it again.
    await queue(db, now, callup_push(uid(52), key="c2"))
    await sender.deliver_due(now)
    assert len(calls(fake, SUBSCRIBE_PATH)) == 1


async def test_a_broadcast_nobody_asked_for_uses_consent_or_nothing(db: Database, sender: OutboxSender,
                                                                    fake: FakeWeChatServer, cfg: Config,
                                                                    clock: FakeClock,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    now = clock.now()
    sub_id = cfg.templates["broadcast"].subscribe.template_id
    await add_user(db, uid(53), now)
    await add_user(db, uid(54), now)
    await give_consent(db, fake, uid(54), sub_id, now)
    with caplog.at_level(logging.WARNING, logger="vetbot.outbox"):
        await queue(db, now, notice(uid(53), key="b", purpose="broadcast"), notice(uid(54), key="b", purpose="broadcast"))
        await sender.deliver_due(now)
    r53, r54 = await row_of(db, uid(53)), await row_of(db, uid(54))
    assert r54.status == "sent" and r54.channel == "subscribe"
    assert r53.status == "failed" and "not allowed for broadcast" in r53.last_error
    assert not calls(fake, TEMPLATE_PATH)
    # The failure is in the log once, with its reason and never the push's text.
    failed = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failed) == 1 and "not allowed for broadcast" in failed[0] and "本周六" not in failed[0]
    assert uid(53) not in failed[0]


async def test_47003_from_the_subscribe_notice_still_reaches_the_person(db: Database, sender: OutboxSender,
                                                                        fake: FakeWeChatServer, cfg: Config,
                                                                        clock: FakeClock,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    now = clock.now()
    sub_id = cfg.templates["callup"].subscribe.template_id
    for i in (55, 56):
        await add_user(db, uid(i), now)
        await give_consent(db, fake, uid(i), sub_id, now)
    fake.state.add_fault(FaultRule(path=SUBSCRIBE_PATH, errcode=47003, errmsg="argument invalid! data.time3.value invalid",
                                   count=2))
    with caplog.at_level(logging.ERROR, logger="vetbot.outbox"):
        await queue(db, now, callup_push(uid(55)), callup_push(uid(56)))
        await sender.deliver_due(now)
    assert [r.channel for r in await rows(db)] == ["template", "template"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "templates.callup" in errors[0] and "47003" in errors[0]


async def test_a_transient_error_gives_a_one_time_consent_back(db: Database, sender: OutboxSender,
                                                                fake: FakeWeChatServer, cfg: Config,
                                                                clock: FakeClock) -> None:
    now = clock.now()
    sub = cfg.templates["job_alert"].subscribe
    sub.kind = "one_time"
    await add_user(db, uid(57), now)
    await give_consent(db, fake, uid(57), sub.template_id, now, kind="one_time")
    fake.state.add_fault(FaultRule(path=SUBSCRIBE_PATH, errcode=-1, count=1))
    await queue(db, now, notice(uid(57), key="j", purpose="job_alert"))
    await sender.deliver_due(now)
    row = await row_of(db, uid(57))
    assert row.status == "pending" and (await consent_row(db, uid(57), sub.template_id)).credits == 1
    await sender.deliver_due(row.due_at)
    row = await row_of(db, uid(57))
    assert row.status == "sent" and row.channel == "subscribe"
    assert (await consent_row(db, uid(57), sub.template_id)).credits == 0


async def test_two_senders_never_spend_one_one_time_consent_twice(db: Database, clock: FakeClock) -> None:
    import asyncio

    from storage.subscribe import Choice, record_choices, reserve

    now = clock.now()
    async with db.session() as s:
        await record_choices(s, uid(58), [Choice("SUB1", "accept")], now, scene="1", kinds={"SUB1": "one_time"})
    got = await asyncio.gather(*(reserve(db, uid(58), "SUB1", now) for _ in range(5)))
    assert sum(got) == 1
