"""Typed escalation steps (stored as the same frozen dicts as before, old rows load) and the escalation
auditor, driven by an injected clock, on SQLite and PostgreSQL."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlalchemy import select, update

from bot.scheduler import run_tick
from flows.api import ticks
from flows.callup import service, steps
from storage.callup import CallUp, CallUpEvent
from storage.models import OutboxMessage
from tests.callup.conftest import Env
from tests.callup.test_service import add_staff, create, pushes, roster, tick


async def audit_tick(env: Env) -> None:
    t = next(t for t in ticks() if t.name == "callup_audit")
    await run_tick(t, env.db, env.services)


def test_steps_round_trip_and_read_the_stored_dicts() -> None:
    teams = [SimpleNamespace(id=i, name=f"队{i}", township="甲" if i < 3 else "乙") for i in range(1, 6)]
    chain = steps.build_chain(steps.Timing(10, 2, 20, 30), teams[:1], teams)
    assert [type(s) for s in chain] == [steps.Renotify, steps.Renotify, steps.Widen, steps.Widen, steps.StaffAlert]
    assert chain[2] == steps.Widen(wait_min=20, teams=(2,), group="同乡镇其他队伍")
    stored = steps.dump_chain(chain)
    # The stored form is the dict call-ups have always carried, so rows written before still load.
    assert stored[0] == {"do": "renotify", "n": 1, "wait_min": 10}
    assert stored[3] == {"do": "widen", "teams": [3, 4, 5], "label": "全部其余队伍", "wait_min": 20}
    assert stored[4] == {"do": "staff_alert", "wait_min": 30}
    assert steps.load_chain(stored) == chain
    with pytest.raises(AttributeError):
        chain[0].n = 5  # type: ignore[misc]  # frozen
    odd = steps.load_chain([{"do": "renotify", "wait_min": "x"}, {"do": "sms_everyone", "wait_min": 5}, "junk"])
    assert odd[0] == steps.Renotify(wait_min=0, n=1)
    assert isinstance(odd[1], steps.UnknownStep) and odd[1].wait_min == 5 and odd[1].dump()["do"] == "sms_everyone"
    assert isinstance(odd[2], steps.UnknownStep)


async def test_a_call_up_stored_in_the_old_dict_form_runs_its_chain(env: Env) -> None:
    await add_staff(env)
    cid = await create(env, needed=3)
    old = [{"do": "renotify", "n": 1, "wait_min": 10},  # exactly what the if/elif version wrote
           {"do": "page_the_mayor", "wait_min": 5},     # a kind this version does not know
           {"do": "widen", "teams": [env.teams["河东乡队"]], "label": "河东乡队", "wait_min": 5},
           {"do": "staff_alert", "wait_min": 5}]
    async with env.db.session() as s:
        await s.execute(update(CallUp).where(CallUp.id == cid).values(chain=old))
    ran = []
    for minutes in (10, 5, 5, 5):
        env.clock.advance(minutes=minutes)
        async with env.db.session() as s:
            ran.append(await service.run_step(s, env.services, cid, env.clock.now()))
    assert ran == ["renotify", "unknown", "widen", "staff_alert"]
    assert len(await pushes(env, "callup", "集结提醒·第1次")) == 6
    assert len(await pushes(env, "callup_progress", "升级步骤无法识别")) == 1
    assert (await roster(env, cid))["targets"] == 12


async def test_auditor_alerts_staff_once_about_an_overdue_escalation(env: Env) -> None:
    await add_staff(env)
    cid = await create(env, needed=3)
    # On time: the escalation tick runs each step when due; the auditor has nothing to say.
    for _ in range(2):
        env.clock.advance(minutes=10)
        await tick(env)
        await audit_tick(env)
    assert not await pushes(env, "callup_progress", "超时")
    # The escalation tick stops (scheduler wedged, a step failing every time): the widen step is due at
    # +20 min and nothing runs it.
    env.clock.advance(minutes=24)
    await audit_tick(env)
    assert not await pushes(env, "callup_progress", "超时")  # 4 minutes late: within audit_overdue_min
    env.clock.advance(minutes=2)
    await audit_tick(env)
    alert = await pushes(env, "callup_progress", "超时")
    assert len(alert) == 1 and "升级通知已超时 6 分钟未执行（扩大到同乡镇其他队伍）" in alert[0].payload["text"]
    for _ in range(3):  # once per problem, not every tick
        env.clock.advance(minutes=1)
        await audit_tick(env)
    assert len(await pushes(env, "callup_progress", "超时")) == 1
    # Escalation resumes, then stalls again at the next step: that is a new problem.
    await tick(env)
    env.clock.advance(minutes=26)
    await audit_tick(env)
    assert len(await pushes(env, "callup_progress", "超时")) == 2
    async with env.db.session() as s:
        problems = [e.detail["problem"] for e in (await s.execute(select(CallUpEvent).where(
            CallUpEvent.callup_id == cid, CallUpEvent.kind == "audit_alert"))).scalars()]
    assert problems == ["overdue:2", "overdue:3"]


async def test_auditor_alerts_staff_once_when_pushes_keep_failing(env: Env) -> None:
    await add_staff(env)
    cid = await create(env, needed=3)
    ok = await create(env, needed=3, teams=["城关镇二队"])
    members = await pushes(env, "callup")
    mine = [p.id for p in members if p.ref_id == cid]
    async with env.db.session() as s:
        await s.execute(update(OutboxMessage).where(OutboxMessage.id.in_(mine[:2])).values(
            status="failed", last_error="no channel (no template for callup, no kefu window, no phone for SMS)"))
        await s.execute(update(OutboxMessage).where(OutboxMessage.id == mine[2]).values(
            status="pending", attempts=3, last_error="template: -1 system error"))
        await s.execute(update(OutboxMessage).where(OutboxMessage.id.in_(mine[3:])).values(status="sent"))
        await s.execute(update(OutboxMessage).where(OutboxMessage.ref_id == ok).values(status="sent"))
    await audit_tick(env)
    alerts = await pushes(env, "callup_progress", "发送失败")
    assert len(alerts) == 1 and alerts[0].ref_id == cid
    text = alerts[0].payload["text"]
    assert "3/6 条发送失败或反复重试" in text and "no channel" in text and "vetbot outbox status" in text
    env.clock.advance(minutes=1)
    await audit_tick(env)
    assert len(await pushes(env, "callup_progress", "发送失败")) == 1


async def test_auditor_ignores_a_few_failures_and_closed_call_ups(env: Env) -> None:
    await add_staff(env)
    cid = await create(env, needed=3)
    mine = [p.id for p in await pushes(env, "callup")]
    async with env.db.session() as s:
        await s.execute(update(OutboxMessage).where(OutboxMessage.id.in_(mine[:2])).values(status="failed"))
    await audit_tick(env)  # 2 failed: below audit_min_failed (3)
    async with env.db.session() as s:
        await service.close_callup(s, env.services, cid, "tester", env.clock.now())
        await s.execute(update(OutboxMessage).where(OutboxMessage.id.in_(mine)).values(status="failed"))
    env.clock.advance(hours=2)
    await audit_tick(env)
    assert not await pushes(env, "callup_progress", "发送失败")
    assert not await pushes(env, "callup_progress", "超时")
