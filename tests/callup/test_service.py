"""Call-up rules on SQLite and PostgreSQL: quorum per skill, late_counts per type, standby, promotion and
reopening, escalation driven by an injected clock (idempotent, one step at a time, stops when filled),
leave, closing, drills out of statistics, and exact counts under concurrent answers."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.scheduler import run_tick
from flows.api import ticks
from flows.callup import audit, service
from storage.callup import CallUp, CallUpAnswer, CallUpEvent, CallUpTarget, Member
from storage.models import OutboxMessage, User
from storage.outbox import EMERGENCY
from tests.callup.conftest import T0, Env, roster_rows, seed

STAFF = "oFakeVetbotStaff_0000000001"


async def mid(env: Env, n: int) -> int:
    async with env.db.session() as s:
        return (await s.execute(select(Member.id).where(Member.phone == str(13900000000 + n)))).scalar_one()


async def add_staff(env: Env, openid: str = STAFF) -> None:
    async with env.db.session() as s:
        s.add(User(openid=openid, subscribed=True, first_seen=T0, last_seen=T0, kefu_sent=0, roles="staff"))


async def create(env: Env, *, teams: list[str] | None = ("城关镇一队",), **kw: Any) -> int:  # type: ignore[assignment]
    spec = service.CallupSpec(kind=kw.pop("kind", "其他"), title=kw.pop("title", "测试集结"), place="城关镇大堤",
                              assemble_at=T0 + timedelta(hours=1), needed=kw.pop("needed", 2),
                              team_ids=None if teams is None else [env.teams[t] for t in teams], **kw)
    async with env.db.session() as s:
        c = await service.create_callup(s, env.services, spec, env.clock.now())
        return c.id


async def answer(env: Env, cid: int, n: int, a: str, eta: int | None = None) -> service.AnswerResult:
    member = await mid(env, n)
    async with env.db.session() as s:
        return await service.record_answer(s, env.services, cid, member, a, env.clock.now(), eta_min=eta, via="test")


async def roster(env: Env, cid: int) -> dict[str, Any]:
    async with env.db.session() as s:
        c = await s.get(CallUp, cid)
        assert c is not None
        return await service.roster(s, env.services, c, env.clock.now())


async def pushes(env: Env, purpose: str | None = None, contains: str = "") -> list[OutboxMessage]:
    async with env.db.session() as s:
        q = select(OutboxMessage).order_by(OutboxMessage.id)
        if purpose:
            q = q.where(OutboxMessage.purpose == purpose)
        return [o for o in (await s.execute(q)).scalars() if contains in o.payload["text"]]


async def tick(env: Env) -> None:
    t = next(t for t in ticks() if t.name == "callup_escalate")
    await run_tick(t, env.db, env.services)


# Members of 城关镇一队 (0-5): 0 驾驶+医护, 1 医护, 2 救援, 3 驾驶, 4 医护, 5 救援.


async def test_quorum_needs_every_skill_then_later_yes_is_standby(env: Env) -> None:
    await add_staff(env)
    cid = await create(env, needed=2, skills_needed={"驾驶": 1, "医护": 1})
    assert len(await pushes(env, "callup")) == 6
    assert all(p.priority == EMERGENCY and p.ref_type == "callup" and p.ref_id == cid for p in await pushes(env))
    assert (await answer(env, cid, 2, "yes")).recorded_as == "confirmed"
    assert (await answer(env, cid, 5, "yes")).filled_now is False  # 2 confirmed, no 驾驶 / 医护 yet
    assert (await answer(env, cid, 1, "yes")).filled_now is False  # 医护 met, 驾驶 not
    r = await roster(env, cid)
    assert (r["state"], r["confirmed"], r["by_skill"]["驾驶"], r["by_skill"]["医护"]) == (
        "open", 3, {"needed": 1, "confirmed": 0, "late": 0}, {"needed": 1, "confirmed": 1, "late": 0})
    res = await answer(env, cid, 3, "yes")
    assert res.filled_now and res.callup.state == "filled"
    assert len(await pushes(env, "callup_progress", "人数已满")) == 1
    later = await answer(env, cid, 4, "yes")
    assert later.recorded_as == "standby" and "备用" in later.message
    r = await roster(env, cid)
    assert {k: r[k] for k in ("state", "needed", "confirmed", "late", "declined", "no_answer", "standby")} == {
        "state": "filled", "needed": 2, "confirmed": 4, "late": 0, "declined": 0, "no_answer": 1, "standby": 1}
    assert r["next_step"] is None  # escalation stopped


async def test_a_member_with_two_skills_counts_for_both(env: Env) -> None:
    cid = await create(env, needed=1, skills_needed={"驾驶": 1, "医护": 1})
    assert (await answer(env, cid, 0, "yes")).filled_now


async def test_late_counts_only_where_the_type_says_so(env: Env) -> None:
    assert env.config.callup.types["防汛"].late_counts is True  # config.example.yaml
    flood = await create(env, kind="防汛", needed=1)
    other = await create(env, kind="其他", needed=1, teams=["城关镇二队"])
    assert (await answer(env, flood, 2, "late", eta=20)).filled_now
    assert not (await answer(env, other, 8, "late", eta=20)).filled_now
    r = await roster(env, other)
    assert (r["late"], r["counted"], r["state"]) == (1, 0, "open")


async def test_late_again_without_a_time_keeps_the_estimate(env: Env) -> None:
    # A walk-through: by SMS 大概晚半个钟头, then 2 — the 30 minutes were lost and the board said 未说.
    cid = await create(env, kind="其他", needed=3)
    await answer(env, cid, 2, "late", eta=30)
    await answer(env, cid, 2, "late")
    async with env.db.session() as s:
        t = (await s.execute(select(CallUpTarget).where(CallUpTarget.callup_id == cid))).scalars().all()
    assert [x.eta_min for x in t if x.status == "late"] == [30]
    await answer(env, cid, 2, "late", eta=10)  # a new estimate replaces it
    async with env.db.session() as s:
        t = (await s.execute(select(CallUpTarget).where(CallUpTarget.callup_id == cid))).scalars().all()
    assert [x.eta_min for x in t if x.status == "late"] == [10]


async def test_last_answer_wins_and_every_answer_is_kept(env: Env) -> None:
    cid = await create(env, needed=3)
    for a in ("yes", "no", "late", "yes"):
        await answer(env, cid, 2, a, eta=15 if a == "late" else None)
    r = await roster(env, cid)
    assert (r["confirmed"], r["late"], r["declined"]) == (1, 0, 0)
    async with env.db.session() as s:
        hist = list((await s.execute(select(CallUpAnswer.answer, CallUpAnswer.eta_min)
                                     .where(CallUpAnswer.callup_id == cid).order_by(CallUpAnswer.id))).all())
    assert hist == [("yes", None), ("no", None), ("late", 15), ("yes", None)]


async def test_withdrawal_promotes_standby_then_reopens(env: Env) -> None:
    await add_staff(env)
    cid = await create(env, needed=2)
    await answer(env, cid, 2, "yes")
    assert (await answer(env, cid, 5, "yes")).filled_now
    assert (await answer(env, cid, 1, "yes")).recorded_as == "standby"
    env.clock.advance(minutes=1)
    res = await answer(env, cid, 2, "no")
    assert not res.reopened and res.callup.state == "filled"
    promoted = await pushes(env, "callup", "原确认人员有变动")
    assert [p.openid for p in promoted] == ["oFakeVetbotUser_000000000001"]
    r = await roster(env, cid)
    assert (r["confirmed"], r["standby"], r["declined"]) == (2, 0, 1)
    env.clock.advance(minutes=1)
    res = await answer(env, cid, 5, "no")
    assert res.reopened and res.callup.state == "open"
    assert res.callup.next_due_at == env.clock.now() + timedelta(minutes=10)  # escalation resumes
    assert len(await pushes(env, "callup_progress", "重新开放")) == 1


async def test_escalation_chain_runs_one_step_at_a_time_and_is_idempotent(env: Env) -> None:
    await add_staff(env)
    cid = await create(env, needed=3)
    await answer(env, cid, 2, "no")
    await tick(env)
    assert not await pushes(env, "callup", "集结提醒")  # nothing due yet
    env.clock.advance(minutes=10)
    # A step that crashes before commit leaves nothing behind and runs again.
    with pytest.raises(RuntimeError):
        async with env.db.session() as s:
            assert await service.run_step(s, env.services, cid, env.clock.now()) == "renotify"
            raise RuntimeError("crash before commit")
    assert not await pushes(env, "callup", "集结提醒")
    await tick(env)
    await tick(env)  # the same moment again: the next step is not due yet
    first = await pushes(env, "callup", "集结提醒·第1次")
    assert len(first) == 5 and "oFakeVetbotUser_000000000002" not in {p.openid for p in first}
    assert len(await pushes(env, "callup_progress", "已第1次提醒")) == 1
    env.clock.advance(minutes=10)
    await tick(env)
    assert len(await pushes(env, "callup", "集结提醒·第2次")) == 5
    env.clock.advance(minutes=19)
    await tick(env)
    assert (await roster(env, cid))["targets"] == 6
    env.clock.advance(minutes=1)
    await tick(env)  # widen: the other team of the same township
    r = await roster(env, cid)
    assert r["targets"] == 12 and r["next_step"] == "扩大到全部其余队伍"
    assert {p.openid for p in await pushes(env, "callup", "应急集结")} >= {"oFakeVetbotUser_000000000006"}
    env.clock.advance(minutes=20)
    await tick(env)
    assert (await roster(env, cid))["targets"] == 18
    env.clock.advance(minutes=30)
    await tick(env)
    assert len(await pushes(env, "callup_progress", "人数仍未满足")) == 1
    r = await roster(env, cid)
    assert r["step"] == r["steps"] == 5 and r["next_step"] is None
    env.clock.advance(hours=5)
    await tick(env)
    async with env.db.session() as s:
        kinds = list((await s.execute(select(CallUpEvent.kind).where(CallUpEvent.callup_id == cid)
                                      .order_by(CallUpEvent.id))).scalars())
    assert kinds == ["created", "renotified", "renotified", "widened", "widened", "staff_alert"]
    # No push key was ever queued twice.
    keys = [p.idempotency_key for p in await pushes(env)]
    assert len(keys) == len(set(keys))


async def test_filled_call_up_stops_escalating(env: Env) -> None:
    cid = await create(env, needed=1)
    await answer(env, cid, 0, "yes")
    env.clock.advance(hours=3)
    await tick(env)
    assert not await pushes(env, "callup", "集结提醒")
    assert (await roster(env, cid))["targets"] == 6


async def test_members_on_leave_are_skipped(env: Env) -> None:
    async with env.db.session() as s:
        m = await s.get(Member, await mid(env, 0))
        m.away_until = T0 + timedelta(days=2)
    cid = await create(env, needed=2)
    r = await roster(env, cid)
    assert (r["targets"], r["skipped_away"]) == (5, 1)
    assert "oFakeVetbotUser_000000000000" not in {p.openid for p in await pushes(env, "callup")}
    async with env.db.session() as s:  # member 1 goes on leave after being called: no reminders
        m = await s.get(Member, await mid(env, 1))
        m.away_until = T0 + timedelta(days=2)
    env.clock.advance(minutes=10)
    await tick(env)
    assert "oFakeVetbotUser_000000000001" not in {p.openid for p in await pushes(env, "callup", "集结提醒")}


async def test_unbound_members_are_targeted_but_listed_for_a_phone_call(env: Env) -> None:
    await seed(env.db, roster_rows([("无微信队", "西山镇")], 3, bound=False, phone_base=13600000000))
    async with env.db.session() as s:
        env.teams["无微信队"] = (await s.execute(select(Member.team_id).where(
            Member.phone == "13600000000"))).scalar_one()
    cid = await create(env, needed=1, teams=["无微信队"])
    r = await roster(env, cid)
    assert (r["targets"], r["unreachable"], r["no_answer"]) == (3, 3, 3)
    assert not await pushes(env, "callup")


async def test_close_tells_those_coming_and_drills_are_marked_everywhere(env: Env) -> None:
    await add_staff(env)
    cid = await create(env, needed=5, drill=True)
    await answer(env, cid, 0, "yes")
    await answer(env, cid, 1, "late", eta=30)
    await answer(env, cid, 2, "no")
    env.clock.advance(minutes=10)
    await tick(env)
    async with env.db.session() as s:
        c, _, closed_now = await service.close_callup(s, env.services, cid, "tester", env.clock.now())
    assert closed_now and c.state == "closed" and c.next_due_at is None
    told = await pushes(env, "callup", "集结结束")
    assert {p.openid for p in told} == {"oFakeVetbotUser_000000000000", "oFakeVetbotUser_000000000001"}
    everything = await pushes(env)
    assert everything and all("【演练】" in p.payload["text"] for p in everything)
    assert all("【演练】" in p.payload["data"]["title"] for p in everything)
    after = await answer(env, cid, 3, "yes")
    assert after.recorded_as is None and "已结束" in after.message
    async with env.db.session() as s:
        _, _, again = await service.close_callup(s, env.services, cid, "tester", env.clock.now())
    assert again is False
    env.clock.advance(hours=1)
    await tick(env)
    assert len(await pushes(env)) == len(everything)


async def test_statistics_keep_drills_out(env: Env) -> None:
    real = await create(env, needed=1)
    drill = await create(env, needed=1, drill=True, teams=["城关镇二队"])
    env.clock.advance(minutes=4)
    await answer(env, real, 0, "yes")
    await answer(env, drill, 6, "yes")
    await answer(env, drill, 7, "no")
    async with env.db.session() as s:
        st = await audit.stats(s)
        sd = await audit.stats(s, drills=True)
    assert (st["callups"], st["targets"], st["answered"], st["filled"], st["median_fill_min"]) == (1, 6, 1, 1, 4.0)
    assert (sd["callups"], sd["targets"], sd["answered"]) == (1, 6, 2)
    assert "演练" not in audit.stats_text(st).split("（")[0]


async def test_concurrent_answers_keep_counts_exact(env: Env) -> None:
    await add_staff(env)
    await seed(env.db, roster_rows([("大队", "城关镇")], 120, skills=False, phone_base=13500000000,
                                          openid_base=1000))
    async with env.db.session() as s:
        env.teams["大队"] = (await s.execute(select(Member.team_id).where(Member.phone == "13500000000"))).scalar_one()
        ids = list((await s.execute(select(Member.id).where(Member.team_id == env.teams["大队"])
                                    .order_by(Member.id))).scalars())
    cid = await create(env, needed=50, teams=["大队"])
    plan = ["yes"] * 80 + ["late"] * 20 + ["no"] * 20

    async def one(member: int, a: str) -> str | None:
        for attempt in range(3):
            try:
                async with env.db.session() as s:
                    r = await service.record_answer(s, env.services, cid, member, a, env.clock.now(), via="web")
                    return r.recorded_as
            except Exception:  # pragma: no cover - a serialisation failure would be retried by the client
                if attempt == 2:
                    raise
        return None

    got = await asyncio.gather(*(one(m, a) for m, a in zip(ids, plan, strict=True)))
    assert got.count("confirmed") == 50 and got.count("standby") == 30
    r = await roster(env, cid)
    assert {k: r[k] for k in ("state", "confirmed", "late", "declined", "no_answer", "standby")} == {
        "state": "filled", "confirmed": 50, "late": 20, "declined": 20, "no_answer": 0, "standby": 30}
    async with env.db.session() as s:
        fills = (await s.execute(select(func.count()).select_from(CallUpEvent).where(
            CallUpEvent.callup_id == cid, CallUpEvent.kind == "filled"))).scalar()
        answers = (await s.execute(select(func.count()).select_from(CallUpAnswer)
                                   .where(CallUpAnswer.callup_id == cid))).scalar()
        targets = (await s.execute(select(func.count()).select_from(CallUpTarget)
                                   .where(CallUpTarget.callup_id == cid))).scalar()
    assert (fills, answers, targets) == (1, 120, 120)
    assert len(await pushes(env, "callup_progress", "人数已满")) == 1


async def test_audit_trail_has_every_push_with_channel_and_result(env: Env) -> None:
    from bot.fake_wechat import FakeWeChatServer
    from bot.outbox import build_sender

    await add_staff(env)
    cid = await create(env, needed=2)
    await answer(env, cid, 0, "late", eta=10)
    async with FakeWeChatServer() as fake:
        env.config.wechat.api_base, env.config.wechat.appid = fake.base_url, fake.state.appid
        fake.state.set_users({"oFakeVetbotUser_000000000003": {"followed": False}})
        sender = build_sender(env.config, env.db, env.clock, worker="audit-test")
        try:
            await sender.deliver_due(env.clock.now())
        finally:
            await sender.close()
    async with env.db.session() as s:
        rows = await audit.trail(s, cid, env.config.bot.timezone)
    assert rows is not None
    sent = [r for r in rows if r["type"] == "push"]
    assert len(sent) == 7  # six members and the staff user
    by_member = {r["openid"]: r for r in sent}
    assert by_member["oFakeVetbotUser_000000000000"]["status"] == "sent"
    assert by_member["oFakeVetbotUser_000000000000"]["channel"] == "template"
    failed = by_member["oFakeVetbotUser_000000000003"]
    assert failed["status"] in ("failed", "cancelled") and failed["last_error"]
    lines = [audit.line(r) for r in rows]
    assert any("answer" in line and "晚到" in line and "eta=10min" in line for line in lines)
    assert any("channel=template" in line for line in lines)


async def test_late_then_yes_after_the_quorum_filled_keeps_the_member_counted(env: Env) -> None:
    # Issue 14.11: a driver counted as 晚到 (防汛 counts late arrivals) pressed 到 after the call-up
    # filled; he was made 备用, a standby was promoted, staff were told "有人改为不能到" and 驾驶 dropped.
    await add_staff(env)
    cid = await create(env, kind="防汛", needed=2, skills_needed={"驾驶": 1})
    assert (await answer(env, cid, 3, "late", eta=30)).recorded_as == "late"  # 3 drives
    assert (await answer(env, cid, 0, "yes")).filled_now  # 0 drives too: 驾驶 2/1
    assert (await answer(env, cid, 1, "yes")).recorded_as == "standby"
    before = await roster(env, cid)
    progress = len(await pushes(env, "callup_progress"))
    env.clock.advance(minutes=2)
    up = await answer(env, cid, 3, "yes")  # the upgrade, 晚到 -> 到
    assert up.recorded_as == "confirmed" and not up.reopened and "已记录：到" in up.message
    r = await roster(env, cid)
    assert r["state"] == "filled" and r["counted"] == before["counted"] == 2
    assert r["by_skill"]["驾驶"]["confirmed"] == before["by_skill"]["驾驶"]["confirmed"] == 2
    assert (r["confirmed"], r["late"], r["standby"]) == (2, 0, 1)  # the standby stays standby
    assert not await pushes(env, "callup", "原确认人员有变动")
    assert len(await pushes(env, "callup_progress")) == progress  # staff are told nothing false


async def test_yes_to_late_where_late_does_not_count_tells_staff_the_truth(env: Env) -> None:
    # The same path where it is real: 到 -> 晚到 on a type where late arrivals do not count.
    await add_staff(env)
    cid = await create(env, kind="其他", needed=1)
    assert (await answer(env, cid, 2, "yes")).filled_now
    assert (await answer(env, cid, 1, "yes")).recorded_as == "standby"
    env.clock.advance(minutes=1)
    await answer(env, cid, 2, "late", eta=20)
    told = await pushes(env, "callup_progress", "备用人员补上")
    assert len(told) == 1 and "改为晚到" in told[0].payload["text"] and "改为不能到" not in told[0].payload["text"]
