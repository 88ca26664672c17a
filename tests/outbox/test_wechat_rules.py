"""Every push, made by the real features, through every channel against the fake API: what reaches
WeChat obeys its rules of today (no first/remark, keyword fields of at most 20 characters, no line
breaks) and what a person sees (the fake's ``rendered`` view) is what was sent."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from bot.clock import FakeClock
from bot.config import Config
from bot.fake_wechat import FakeWeChatServer
from bot.outbox import build_sender
from bot.template_rules import field_kind
from flows.api import Services, load_all
from storage.db import Database
from storage.outbox import Push, enqueue
from storage.subscribe import Choice, record_choices
from tests.outbox.conftest import (
    KEFU_PATH,
    SUBSCRIBE_PATH,
    TEMPLATE_PATH,
    FakeSmsGateway,
    calls,
    outbox_config,
    rows,
    set_user,
    uid,
)


def assert_obeys_the_rules(fake: FakeWeChatServer) -> int:
    """Fail on any recorded template message or 订阅通知 that WeChat would not show as sent."""
    n = 0
    for c in calls(fake, TEMPLATE_PATH) + calls(fake, SUBSCRIBE_PATH):
        data = c["body"]["data"]
        assert "first" not in data and "remark" not in data, c["body"]
        for name, item in data.items():
            assert field_kind(name) is not None, f"{name}: not a keyword field"
            value = item["value"]
            assert len(value) <= 20, f"{name}: {value!r} is {len(value)} characters"
            assert "\n" not in value and value.strip() == value
        registered = fake.state.templates.get(c["body"]["template_id"])
        if registered and registered["fields"]:
            # Every field the card has is filled: nothing left out for want of a valid value.
            assert set(data) == set(registered["fields"]), (c["body"]["template_id"], data)
        if c["errcode"] == 0:
            # What the person sees is exactly what was sent: nothing cut or dropped by WeChat.
            shown = {f["name"]: f["value"] for f in c["rendered"]["fields"]}
            assert shown == {k: v["value"] for k, v in data.items()}
        n += 1
    return n


async def consent(db: Database, fake: FakeWeChatServer, openid: str, template_id: str, now: Any) -> None:
    fake.state.subscribe_choice(openid, template_id, "accept")
    async with db.session() as s:
        await record_choices(s, openid, [Choice(template_id, "accept")], now, scene="1",
                             kinds={template_id: fake.state.template_kind(template_id)})


async def test_every_purpose_through_every_channel_obeys_the_rules(db: Database, db_url: str, fake: FakeWeChatServer,
                                                                   sms_gateway: FakeSmsGateway,
                                                                   clock: FakeClock) -> None:
    from bot.links import JobLinks
    from flows.broadcast import service as broadcasts
    from flows.callup.service import CallupSpec, create_callup
    from flows.jobs.alerts import instant_push
    from flows.memorial.campaigns import reminder_push
    from storage.jobs import JobPosting
    from storage.memorial import MemorialCampaign
    from tests.callup.conftest import roster_rows, seed

    load_all()
    cfg = outbox_config(db_url, fake, sms__webhook_url=sms_gateway.url, sms__hmac_secret=sms_gateway.secret)
    from bot.fake_wechat import templates_of

    fake.state.add_templates(templates_of(cfg))
    now = clock.now()
    services = Services(config=cfg, clock=clock, db=db)
    # Four people per purpose: 0 in the chat window, 1 with 订阅通知 consent, 2 with nothing, 3 with a phone
    # only (no template allowed: a plain broadcast).
    await seed(db, roster_rows([("城关镇一队", "城关镇")], 4, openid_base=0))
    # (The roster import made their users rows, phones included.)
    await set_user(db, uid(0), last_message_at=now)
    for i in (1, 2, 3):
        await set_user(db, uid(i), phone=f"1390000000{i}")
    for purpose in ("callup", "job_alert", "memorial_reminder", "broadcast"):
        await consent(db, fake, uid(1), cfg.templates[purpose].subscribe.template_id, now)
    async with db.session() as s:
        await create_callup(s, services, CallupSpec(kind="防汛", title="城南河段防汛抢险（第二批）请各队立即出发",
                                                    place="城南水文站东侧二号堤坝北端集合点（沿河堤路进入）",
                                                    assemble_at=now + timedelta(hours=2), needed=3), now)
        post = JobPosting(id=7, company="四川省大竹县某某物业管理服务有限公司", title="物业保安（夜班，包吃住，退役军人优先）",
                          location="竹阳街道", salary_min=3500, salary_max=4500, job_type="全职", requirements="",
                          contact="", deadline=None, veteran_priority=True, source="", natural_key="k", search_text="",
                          created_at=now, updated_at=now)
        camp = MemorialCampaign(id=3, code="qingming-2026", title="清明节·缅怀革命先烈网上祭扫活动", kind="qingming",
                                day=now.date(), message="今天是清明节，欢迎来云端祭英烈，献花寄语，缅怀先烈。\n回复“祭英烈”")
        pushes = []
        for i in range(4):
            pushes.append(instant_push(cfg, uid(i), post, now, now, JobLinks(cfg, {uid(i): "t" * 32})))
            pushes.append(reminder_push(cfg, camp, uid(i)))
            pushes.append(Push(openid=uid(i), purpose="late_reply", key=f"late:{i}",
                               text="优待证在户籍所在地的乡镇（街道）退役军人服务站申请，\n带上身份证和退役证。🙂"))
        await enqueue(s, pushes, now)
    sender = build_sender(cfg, db, clock)
    try:
        await sender.deliver_due(now)
        # The notices go out after the pushes above and one after the other, so that which push spends the
        # window's last kefu message does not depend on the order concurrent sends happen to finish in.
        async with db.session() as s:
            warning = await broadcasts.queue(s, now, title="防汛预警：今晚到明早有大暴雨，请注意防范",
                                             text="请远离河道、危房。", warning=True)
        await sender.deliver_due(now)
        async with db.session() as s:
            plain = await broadcasts.queue(s, now, title="工作通知", text="周五下午3点在局会议室开座谈会")
        await sender.deliver_due(now)
    finally:
        await sender.close()
    got: dict[tuple[str, str], set[str]] = {}
    for r in await rows(db):
        got.setdefault((r.purpose, r.openid), set()).add(r.channel or r.status)
    for purpose in ("callup", "job_alert", "memorial_reminder", "late_reply"):
        assert got[(purpose, uid(0))] == {"kefu"}, purpose
        # Consent is the channel after kefu; late replies have no 订阅通知 template.
        assert got[(purpose, uid(1))] == ({"template"} if purpose == "late_reply" else {"subscribe"}), purpose
        assert got[(purpose, uid(2))] == {"template"}, purpose
    # The warning went out as templates; the plain notice (nobody asked for it) only to the window (whose
    # quota of 5 the other pushes spent: SMS then), to the consent, and by SMS.
    by_key = {(r.idempotency_key.split(":", 1)[1], r.openid): r.channel for r in await rows(db)
              if r.purpose == "broadcast"}
    assert [by_key[(warning.key, uid(i))] for i in range(4)] == ["kefu", "subscribe", "template", "template"]
    assert [by_key[(plain.key, uid(i))] for i in range(4)] == ["sms", "subscribe", "sms", "sms"]
    assert calls(fake, KEFU_PATH) and sms_gateway.accepted
    assert assert_obeys_the_rules(fake) >= 15


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the size matters here, not the database
async def test_a_1170_member_callup_sends_only_fields_a_member_sees(db: Database, db_url: str,
                                                                    fake: FakeWeChatServer, clock: FakeClock) -> None:
    # The county's real size: 32 teams, 1,170 members. It once sent 2,340 template fields (first and
    # remark) that no member could see; now every body carries the template's keyword fields only.
    from flows.callup.service import CallupSpec, create_callup
    from tests.callup.conftest import roster_rows, seed

    load_all()
    cfg: Config = outbox_config(db_url, fake, outbox__concurrency=64, outbox__batch_size=500)
    from bot.fake_wechat import templates_of

    fake.state.add_templates(templates_of(cfg))
    teams = [(f"第{i:02d}队", "城关镇") for i in range(32)]
    await seed(db, roster_rows(teams, 37)[:1170])
    now = clock.now()
    async with db.session() as s:
        await create_callup(s, Services(config=cfg, clock=clock, db=db),
                            CallupSpec(kind="防汛", title="城南河段防汛抢险", place="城南水文站",
                                       assemble_at=now + timedelta(hours=1), needed=200), now)
    sender = build_sender(cfg, db, clock)
    try:
        await sender.deliver_due(now)
    finally:
        await sender.close()
    sent = calls(fake, TEMPLATE_PATH)
    assert len(sent) == 1170
    fields = set(cfg.templates["callup"].fields)
    assert all(set(c["body"]["data"]) == fields for c in sent)
    assert sum(len(c["body"]["data"]) for c in sent) == 3 * 1170
    assert_obeys_the_rules(fake)


@pytest.mark.parametrize("data", [
    {"first": "集结通知", "thing1": "城南"},
    {"thing1": "城南", "remark": "请点击回复：到 / 晚到 / 不能到"},
    {"thing1": "城南水文站东侧二号堤坝北端集合点沿河堤路进入"},
])
async def test_the_rule_check_fails_on_first_remark_and_long_fields(fake: FakeWeChatServer,
                                                                    data: dict[str, str]) -> None:
    # The check above is a real one: a body the old config produced trips it.
    from bot.wechat_api import MemoryTokenStore, WeChatClient

    async with WeChatClient(fake.base_url, fake.state.appid, "s", MemoryTokenStore()) as client:
        await client.send_template(uid(1), "TPL", data)
    with pytest.raises(AssertionError):
        assert_obeys_the_rules(fake)
