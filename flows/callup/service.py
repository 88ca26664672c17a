"""Call-up operations shared by the chat flows, the answer page, the CLI and the escalation tick.

Every operation runs inside the caller's transaction and queues its pushes there
(:func:`storage.outbox.enqueue`), so a push exists exactly when the change that causes it exists.
Operations on an existing call-up first lock its row (:func:`storage.callup.lock_callup`): answers,
escalation steps and closing never interleave, so "filled", "standby" and "reopened" are decided on
exact counts. Push idempotency keys are deterministic (``callup:<id>:notify:<member>``,
``callup:<id>:renotify:<n>:<member>`` …): re-running a step after a crash queues nothing twice.
Members without WeChat get one SMS per call-up (``callup:<id>:sms:<member>``, when ``sms.webhook_url`` is
set) with an opaque answer link of their own; their SMS replies are read by :mod:`.sms`.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from flows.api import Services, answer_links, fmt_local, sign, to_local
from flows.callup import steps, texts
from storage import callup as repo
from storage import conversations
from storage.callup import (
    CLOSED,
    CONFIRMED,
    DECLINED,
    FILLED,
    LATE,
    OPEN,
    PENDING,
    STANDBY,
    CallUp,
    CallUpTarget,
    Team,
    lock_callup,
    skill_counts,
    staff_openids,
    status_counts,
    unreachable_count,
)
from storage.outbox import EMERGENCY, HIGH, Push, enqueue

ANSWERS = {"yes": CONFIRMED, "late": LATE, "no": DECLINED}


class CallupError(Exception):
    """A call-up request that cannot be done; ``str(e)`` is a short Chinese explanation."""


@dataclass
class CallupSpec:
    """What staff asked for. ``team_ids`` None = all teams; ``widen`` None = the default chain."""

    kind: str
    title: str
    place: str
    assemble_at: datetime
    needed: int
    skills_needed: dict[str, int] = field(default_factory=dict)
    team_ids: list[int] | None = None
    drill: bool = False
    created_by: str = "cli"
    widen: list[list[int]] | None = None


@dataclass
class AnswerResult:
    """What an answer did: ``recorded_as`` (confirmed/late/declined/standby) or ``closed``."""

    callup: CallUp
    recorded_as: str | None
    filled_now: bool = False
    reopened: bool = False
    message: str = ""


def epoch(when: datetime) -> int:
    """Naive UTC -> epoch seconds (link expiry is computed from the injected clock, not time.time())."""
    return calendar.timegm(when.timetuple())


def _tz(services: Services) -> str:
    return services.config.bot.timezone


def settings_for(config: Any, kind: str) -> dict[str, Any]:
    """The escalation timing and late_counts of a call-up type (callup.types overrides the defaults)."""
    base = config.callup
    out = {k: getattr(base, k) for k in ("renotify_after_min", "renotify_max", "widen_after_min",
                                         "staff_alert_after_min", "late_counts")}
    over = base.types.get(kind)
    if over is not None:
        for k in out:
            v = getattr(over, k)
            if v is not None:
                out[k] = v
    return out


def timing_for(config: Any, kind: str) -> steps.Timing:
    """The escalation waits of a call-up type."""
    t = settings_for(config, kind)
    return steps.Timing(renotify_after_min=t["renotify_after_min"], renotify_max=t["renotify_max"],
                        widen_after_min=t["widen_after_min"], staff_alert_after_min=t["staff_alert_after_min"])


def build_chain(config: Any, kind: str, selected: list[Team], all_teams: list[Team],
                widen: list[list[int]] | None = None) -> list[dict[str, Any]]:
    """The escalation chain frozen into a new call-up, in its stored form (see :mod:`.steps`)."""
    return steps.dump_chain(steps.build_chain(timing_for(config, kind), selected, all_teams, widen))


def step_label(step: steps.Step | dict[str, Any]) -> str:
    """What a step does, in staff's words (a step or its stored dict)."""
    return (step if isinstance(step, steps.Step) else steps.load_step(step)).label()


async def answer_link(session: AsyncSession, config: Any, c: CallUp, member_id: int, openid: str | None,
                      now: datetime) -> str:
    """A member's answer page link: an opaque token in the database (:func:`bot.links.answer_link`),
    for members with or without WeChat (the page checks who opens it, :mod:`bot.web.viewer`)."""
    return (await answer_links(session, config, c, [(member_id, openid)], now))[int(member_id)]


def roster_link(config: Any, c: CallUp, now: datetime) -> str:
    """A signed link to the staff roster page (valid callup.staff_link_ttl_h)."""
    token = sign(config, {"c": c.id, "s": "roster"}, ttl_s=config.callup.staff_link_ttl_h * 3600, now=epoch(now))
    return f"{config.server.public_url.rstrip('/')}/callup/roster/{token}"


async def _event(session: AsyncSession, c: CallUp, kind: str, now: datetime, actor: str = "",
                 **detail: Any) -> None:
    repo.add_event(session, c.id, kind, now, actor, **detail)


class _Notice:
    """A call-up's member push, formatted once and filled in per member (a city fan-out builds 20,000)."""

    NAME, LINK = "\x00name\x00", "\x00link\x00"

    def __init__(self, services: Services, c: CallUp, reminder: int = 0) -> None:
        tz = _tz(services)
        self.services, self.c, self.reminder = services, c, reminder
        self.text = texts.member_notice(c, self.NAME, self.LINK, tz, reminder)
        self.data = texts.member_data(c, "", tz, "", reminder)

    def push(self, member_id: int, openid: str, name: str, phone: str, key: str, link: str) -> Push:
        return Push(openid=openid, purpose="callup", key=key,
                    text=self.text.replace(self.NAME, name).replace(self.LINK, link),
                    data={**self.data, "url": link, "phone": phone}, url=link,
                    priority=EMERGENCY, ref_type="callup", ref_id=self.c.id)


async def notify_staff(session: AsyncSession, services: Services, c: CallUp, event: str, key: str,
                       now: datetime, exclude: tuple[str, ...] = (), roster_now: dict[str, Any] | None = None) -> int:
    """A progress push (roster counts + what happened) to every staff user."""
    r = roster_now or await roster(session, services, c, now)
    text = texts.progress_text(c, r, event)
    link = roster_link(services.config, c, now)
    pushes = [Push(openid=o, purpose="callup_progress", key=f"callup:{c.id}:progress:{key}", text=text,
                   data={"title": f"【集结进度】{texts.label(c)}", "content": f"{event} {texts.counts_line(r)}",
                         "time": fmt_local(now, _tz(services)), "url": link, "callup_id": c.id,
                         "drill": c.drill},
                   url=link, priority=EMERGENCY, ref_type="callup", ref_id=c.id)
              for o in await staff_openids(session) if o not in exclude]
    return await enqueue(session, pushes, now) if pushes else 0


# ---------------------------------------------------------------------------------------------------
# Creating


async def create_callup(session: AsyncSession, services: Services, spec: CallupSpec, now: datetime) -> CallUp:
    """Create a call-up, target every available member of the chosen teams and queue their pushes.

    Members on leave are skipped (counted); members without a WeChat binding are targeted but cannot
    be pushed to (the roster lists them for a phone call)."""
    cfg = services.config
    if spec.needed < 1:
        raise CallupError("需要人数至少 1 人")
    if spec.kind not in cfg.callup.kinds:
        raise CallupError(f"没有“{spec.kind}”这个类型，可选：{'、'.join(cfg.callup.kinds)}")
    for skill in spec.skills_needed:
        if skill not in cfg.callup.skills:
            raise CallupError(f"没有“{skill}”这个技能，可选：{'、'.join(cfg.callup.skills)}")
    all_teams = await repo.all_teams(session)
    if not all_teams:
        raise CallupError("还没有任何队伍，请先导入队伍名册（vetbot teams import）")
    if spec.team_ids is None:
        selected = all_teams
        scope = "全部队伍"
    else:
        wanted = set(spec.team_ids)
        selected = [t for t in all_teams if t.id in wanted]
        if not selected:
            raise CallupError("没有找到所选的队伍")
        scope = "、".join(t.name for t in selected)
        if len(scope) > 190:
            scope = f"{selected[0].name}等{len(selected)}支队伍"
    s = settings_for(cfg, spec.kind)
    chain = build_chain(cfg, spec.kind, selected, all_teams, spec.widen)
    first = steps.load_chain(chain)[0] if chain else None
    c = CallUp(kind=spec.kind, title=spec.title[:100], place=spec.place[:200], assemble_at=spec.assemble_at,
               needed=spec.needed, skills_needed=dict(spec.skills_needed), team_ids=[t.id for t in selected],
               scope_label=scope, drill=spec.drill, late_counts=bool(s["late_counts"]), state=OPEN, chain=chain,
               step=0, next_due_at=now + timedelta(minutes=first.wait_min) if first else None,
               link_expires_at=now + timedelta(hours=cfg.callup.link_ttl_h), created_by=spec.created_by[:64],
               created_at=now)
    session.add(c)
    await session.flush()
    got = await _target_teams(session, services, c, [t.id for t in selected], 0, now)
    await _event(session, c, "created", now, spec.created_by, targets=got.added, skipped_away=got.away,
                 unbound=got.unbound, sms=got.sms, chain=[step_label(x) for x in chain], scope=scope)
    if not got.added:
        await _event(session, c, "no_targets", now)
    await notify_staff(session, services, c, f"已发起集结，{got.words()}", "created", now,
                       exclude=(spec.created_by,))
    return c


def sms_enabled(services: Services) -> bool:
    """Whether call-ups reach roster members without WeChat by SMS (``sms.webhook_url`` is set)."""
    return bool(services.config.sms.webhook_url)


async def _target_teams(session: AsyncSession, services: Services, c: CallUp, team_ids: list[int], wave: int,
                        now: datetime) -> steps.Targeted:
    """Add available members of ``team_ids`` not yet targeted; push to them (WeChat, or SMS for members
    without WeChat when SMS is set up)."""
    already = await repo.targeted_member_ids(session, c.id)
    fresh = [r for r in await repo.candidates(session, team_ids) if r.id not in already]
    avail = [r for r in fresh if r.away_until is None or r.away_until <= now]
    if avail:
        await repo.add_targets(session, c.id, avail, wave, now)
    bound = [r for r in avail if r.openid]
    if bound:
        notice = _Notice(services, c)
        urls = await answer_links(session, services.config, c, [(r.id, r.openid) for r in bound], now)
        await enqueue(session, [notice.push(r.id, r.openid, r.name, r.phone, f"callup:{c.id}:notify:{r.id}",
                                            urls[r.id]) for r in bound], now)
        await conversations.reset(session, [r.openid for r in bound])
    unbound = [r for r in avail if not r.openid]
    sms = await _sms_notify(session, services, c, unbound, now) if unbound and sms_enabled(services) else 0
    return steps.Targeted(len(avail), len(fresh) - len(avail), len(unbound), sms)


def sms_key(c: CallUp | int, member_id: int) -> str:
    """The outbox key of a call-up's SMS to a member (one per member and call-up: reminders are WeChat's)."""
    return f"callup:{c if isinstance(c, int) else c.id}:sms:{member_id}"


async def _sms_notify(session: AsyncSession, services: Services, c: CallUp, members: list[Any],
                      now: datetime) -> int:
    """Queue the call-up SMS to each roster member without WeChat who has a phone, with an answer link
    of their own (an opaque token valid as long as the WeChat links: until ``link_expires_at``).

    Exactly once per member and call-up: members are targeted once, and the outbox key is the member's."""
    members = [r for r in members if r.phone]
    if not members:
        return 0
    urls = await answer_links(session, services.config, c, [(r.id, None) for r in members], now)
    tz = _tz(services)
    pushes = []
    for r in members:
        link = urls[r.id]
        pushes.append(Push(openid="", purpose="callup_sms", key=sms_key(c, r.id),
                           text=texts.sms_notice(c, r.name, link, tz), url=link,
                           data={"callup_id": c.id, "member_id": r.id, "drill": c.drill},
                           priority=EMERGENCY, ref_type="callup", ref_id=c.id, sms_to=r.phone))
    return await enqueue(session, pushes, now)


# ---------------------------------------------------------------------------------------------------
# Roster


def _counting(c: CallUp) -> tuple[str, ...]:
    return (CONFIRMED, LATE) if c.late_counts else (CONFIRMED,)


async def roster(session: AsyncSession, services: Services, c: CallUp, now: datetime | None = None) -> dict[str, Any]:
    """The live roster: ``{"id", "state", "needed", "confirmed", "late", "declined", "no_answer",
    "standby", "by_skill": {skill: {"needed", "confirmed", "late"}}, "unreachable" (no WeChat, no SMS:
    to phone), "sms": {"sent", "waiting", "failed", "answered"}, …}`` (more fields may be added)."""
    counts = await status_counts(session, c.id)
    conf = await skill_counts(session, c.id, (CONFIRMED,))
    late = await skill_counts(session, c.id, (LATE,))
    by_skill: dict[str, dict[str, int]] = {}
    for skill, k in c.skills_needed.items():
        by_skill[skill] = {"needed": k, "confirmed": conf.get(skill, 0) + (late.get(skill, 0) if c.late_counts else 0),
                           "late": late.get(skill, 0)}
    for skill, n in sorted(conf.items()):
        by_skill.setdefault(skill, {"needed": 0, "confirmed": n + (late.get(skill, 0) if c.late_counts else 0),
                                    "late": late.get(skill, 0)})
    nxt = steps.load_step(c.chain[c.step], c.step) if c.next_due_at is not None and c.step < len(c.chain) else None
    tz = _tz(services)
    skipped = sum(int(d.get("skipped_away", 0) or 0)
                  for d in await repo.event_details(session, c.id, ("created", "widened")))
    return {
        "id": c.id, "state": c.state, "needed": c.needed,
        "confirmed": counts[CONFIRMED], "late": counts[LATE], "declined": counts[DECLINED],
        "no_answer": counts[PENDING], "standby": counts[STANDBY], "by_skill": by_skill,
        "counted": counts[CONFIRMED] + (counts[LATE] if c.late_counts else 0),
        "targets": sum(counts.values()), "unreachable": await unreachable_count(session, c.id),
        "sms": await repo.sms_summary(session, c.id),
        "skipped_away": skipped, "title": c.title, "kind": c.kind, "place": c.place,
        "assemble_at": fmt_local(c.assemble_at, tz, "%Y-%m-%d %H:%M"), "drill": c.drill,
        "late_counts": c.late_counts, "scope": c.scope_label,
        "step": c.step, "steps": len(c.chain), "next_step": nxt.label() if nxt else None,
        "next_due_local": fmt_local(c.next_due_at, tz, "%H:%M") if nxt else None,
        "created_at": fmt_local(c.created_at, tz, "%Y-%m-%d %H:%M"),
        "filled_at": fmt_local(c.filled_at, tz, "%Y-%m-%d %H:%M") or None,
        "closed_at": fmt_local(c.closed_at, tz, "%Y-%m-%d %H:%M") or None,
    }


async def roster_members(session: AsyncSession, c: CallUp) -> list[dict[str, Any]]:
    """Every target with name, phone, team, skills and answer (for the staff page and the CLI); ``sms`` is
    the outbox status of the call-up's SMS to a member without WeChat (None: no SMS), ``by_sms`` whether
    the latest answer came by SMS (a reply, or the page opened from the SMS link)."""
    people = await repo.roster_members(session, c.id)
    sms = await repo.sms_by_member(session, c.id)
    for p in people:
        p["sms"] = sms.get(p["member_id"])
        p["by_sms"] = p["via"] in repo.SMS_VIA
    return people


async def _quorum(session: AsyncSession, c: CallUp) -> tuple[bool, int, dict[str, int]]:
    """(met, counted, missing skills) from the targets as they are now (one query)."""
    total, have = await repo.counted(session, c.id, _counting(c), with_skills=bool(c.skills_needed))
    missing = {s: k - have.get(s, 0) for s, k in c.skills_needed.items() if have.get(s, 0) < k}
    return total >= c.needed and not missing, total, missing


# ---------------------------------------------------------------------------------------------------
# Answering


async def record_answer(session: AsyncSession, services: Services, callup_id: int, member_id: int, answer: str,
                        now: datetime, *, eta_min: int | None = None, via: str = "chat") -> AnswerResult:
    """Record one answer (yes / late / no); the last answer wins, every answer is kept.

    A 到 after the call-up is filled becomes standby. When the quorum is met the call-up is filled,
    escalation stops and staff are told; when a confirmed member withdraws from a filled call-up,
    standby members are promoted, or the call-up reopens and escalation resumes."""
    if answer not in ANSWERS:
        raise CallupError("回复请选：到 / 晚到 / 不能到")
    # 到 always decides something (confirmed or standby, maybe filled): lock at once. Others first look.
    c = await (lock_callup(session, callup_id) if answer == "yes" else session.get(CallUp, callup_id))
    if c is None:
        raise CallupError("没有找到这次集结")
    if c.state == CLOSED:
        return AnswerResult(c, None, message=answer_message(services, c, AnswerResult(c, None), None))
    # The member's own row is locked (a double tap never double-counts); the call-up row only when
    # this answer can change who counts toward the quorum, so 不能到 / 晚到 answers never queue
    # behind the 到 answers that decide "filled" and "standby".
    row = await repo.lock_target(session, callup_id, member_id)
    if row is None:
        raise CallupError("您不在这次集结的通知名单中")
    target_id, old = row
    new = ANSWERS[answer]
    counting = _counting(c)
    if answer != "yes" and (new in counting or old in counting):
        c = await lock_callup(session, callup_id)
        assert c is not None
        if c.state == CLOSED:
            return AnswerResult(c, None, message=answer_message(services, c, AnswerResult(c, None), None))
    if new == CONFIRMED and c.state == FILLED and old not in counting:
        # Only a member who does not count yet becomes standby; one already counted (晚到 where
        # late arrivals count) who now says 到 keeps their place (issue 14.11).
        new = STANDBY
    if new == LATE and eta_min is None and old == LATE:
        # 晚到 again without a time (a 2 after 晚半个钟头) keeps the estimate the member gave.
        before = await session.get(CallUpTarget, target_id)
        eta_min = before.eta_min if before is not None else None
    eta = eta_min if new == LATE else None
    await repo.write_answer(session, callup_id=callup_id, member_id=member_id, target_id=target_id, answer=answer,
                            recorded_as=new, eta_min=eta, via=via, now=now)
    result = AnswerResult(c, new)
    if c.state == OPEN and new in counting and old not in counting:
        if (await _quorum(session, c))[0]:
            await _fill(session, services, c, now)
            result.filled_now = True
    elif c.state == FILLED and old in counting and new not in counting:
        result.reopened = await _refill_or_reopen(session, services, c, now, new)
    result.message = answer_message(services, c, result, eta_min)
    return result


def minutes_late(c: CallUp, at: tuple[int, int], tz: str) -> int:
    """A stated arrival time (九点到) as minutes after the assembly time (0 when not late)."""
    assemble = to_local(c.assemble_at, tz)
    arrive = assemble.replace(hour=at[0], minute=at[1])
    if at[0] < 12 and arrive < assemble - timedelta(hours=6):
        arrive += timedelta(hours=12)  # 九点到 said for a 20:30 call-up means 21:00
    if arrive < assemble - timedelta(hours=12):
        arrive += timedelta(days=1)
    minutes = int((arrive - assemble).total_seconds() // 60)
    return max(0, min(minutes, 1440))


async def set_eta(session: AsyncSession, callup_id: int, member_id: int, eta_min: int, now: datetime) -> bool:
    """Add the ETA to a member's 晚到 answer given a moment ago (True when it was still 晚到)."""
    return await repo.set_late_eta(session, callup_id, member_id, eta_min)


def answer_message(services: Services, c: CallUp, r: AnswerResult, eta_min: int | None) -> str:
    """What the member sees after answering (chat reply and answer page)."""
    tz = _tz(services)
    head = texts.label(c)
    if r.recorded_as == CONFIRMED:
        return f"{head}\n已记录：到。请于 {texts.when(c, tz)} 前到达 {c.place} 集合，注意安全！"
    if r.recorded_as == LATE:
        eta = f"（约晚 {eta_min} 分钟）" if eta_min else ""
        return f"{head}\n已记录：晚到{eta}。请尽快前往 {c.place} 集合，注意安全！"
    if r.recorded_as == DECLINED:
        return f"{head}\n已记录：不能到。感谢告知，注意安全。"
    if r.recorded_as == STANDBY:
        return (f"{head}\n人数已满，已把您登记为备用人员，谢谢！请保持电话畅通，需要时会再通知您。")
    return f"{head}\n本次集结已结束，无需再回复。谢谢！"


async def _fill(session: AsyncSession, services: Services, c: CallUp, now: datetime) -> None:
    c.state, c.filled_at, c.next_due_at = FILLED, now, None
    await session.flush()
    r = await roster(session, services, c, now)
    await _event(session, c, "filled", now, confirmed=r["confirmed"], late=r["late"])
    await notify_staff(session, services, c, "人数已满，已停止升级通知。之后回复“到”的人员登记为备用。",
                       f"filled:{epoch(now)}", now, roster_now=r)


def _change_words(became: str) -> str:
    """What staff are told a member changed to (only 不能到 and an uncounted 晚到 reach here)."""
    return "改为晚到（本次晚到不计入人数）" if became == LATE else "改为不能到"


async def _refill_or_reopen(session: AsyncSession, services: Services, c: CallUp, now: datetime,
                            became: str) -> bool:
    """A counted member of a filled call-up no longer counts (``became`` declined, or late where late
    arrivals do not count): promote standby members (those with a missing skill first, earliest answer
    first); if that is not enough, reopen and resume escalation. Returns True when the call-up reopened."""
    met, total, missing = await _quorum(session, c)
    if met:
        return False
    short = c.needed - total
    standby = await repo.standby_for_update(session, c.id)
    chosen: list[CallUpTarget] = []
    for t in standby:  # a missing skill first
        if any(missing.get(s, 0) > 0 for s in t.skills or []):
            chosen.append(t)
            for s in t.skills or []:
                if s in missing:
                    missing[s] -= 1
            short -= 1
    for t in standby:
        if short <= 0 and all(v <= 0 for v in missing.values()):
            break
        if t not in chosen and short > 0:
            chosen.append(t)
            short -= 1
    members = await repo.members_by_ids(session, [t.member_id for t in chosen])
    tz = _tz(services)
    pushes = []
    for t in chosen:
        t.status = CONFIRMED
        m = members.get(t.member_id)
        if m is not None and not m.openid and sms_enabled(services):
            pushes.append(Push(openid="", purpose="callup_sms", key=f"callup:{c.id}:promote:{m.id}:{epoch(now)}",
                               text=f"【集结通知】{texts.label(c)}\n原确认人员有变动，请您按时到{c.place}集合"
                                    f"（{texts.when(c, tz)}）。如不能到请回复短信 3。",
                               data={"callup_id": c.id, "member_id": m.id, "drill": c.drill}, priority=EMERGENCY,
                               ref_type="callup", ref_id=c.id, sms_to=m.phone))
        elif m is not None and m.openid:
            link = await answer_link(session, services.config, c, m.id, m.openid, now)
            pushes.append(Push(openid=m.openid, purpose="callup",
                               key=f"callup:{c.id}:promote:{m.id}:{epoch(now)}",
                               text=f"【集结通知】{texts.label(c)}\n原确认人员有变动，请您按时前往 {c.place} 集合"
                                    f"（{texts.when(c, tz)}）。如不能到请回复 3。\n{link}",
                               data={**texts.member_data(c, link, tz, m.phone),
                                     "title": f"【请出发】{texts.label(c)}"},
                               url=link, priority=EMERGENCY, ref_type="callup", ref_id=c.id))
    if pushes:
        await enqueue(session, pushes, now)
    await session.flush()
    met, _, _ = await _quorum(session, c)
    if chosen:
        await _event(session, c, "promoted", now, members=[t.member_id for t in chosen])
    if met:
        await notify_staff(session, services, c, f"有人{_change_words(became)}，已由 {len(chosen)} 名备用人员补上。",
                           f"promoted:{epoch(now)}", now)
        return False
    c.state = OPEN
    wait = steps.load_step(c.chain[c.step], c.step).wait_min if c.step < len(c.chain) else None
    c.next_due_at = now + timedelta(minutes=wait) if wait is not None else None
    await session.flush()
    await _event(session, c, "reopened", now)
    await notify_staff(session, services, c, f"有人{_change_words(became)}，人数不足，集结重新开放"
                       + ("，升级通知继续。" if wait is not None else "。"), f"reopened:{epoch(now)}", now)
    return True


# ---------------------------------------------------------------------------------------------------
# Escalation


async def due_callups(session: AsyncSession, now: datetime) -> list[int]:
    """Ids of open call-ups whose next escalation step is due."""
    return await repo.due_callups(session, now)


class _Escalation:
    """The operations an escalation step may do to one call-up (see :class:`.steps.Escalation`)."""

    def __init__(self, session: AsyncSession, services: Services, c: CallUp, now: datetime) -> None:
        self.session, self.services, self.c, self.now = session, services, c, now

    async def remind_pending(self, n: int) -> int:
        c = self.c
        members = await repo.pending_bound_members(self.session, c.id, self.now)
        if members:
            notice = _Notice(self.services, c, reminder=n)
            urls = await answer_links(self.session, self.services.config, c,
                                            [(r.id, r.openid) for r in members], self.now)
            await enqueue(self.session, [notice.push(r.id, r.openid, r.name, r.phone,
                                                     f"callup:{c.id}:renotify:{n}:{r.id}", urls[r.id])
                                         for r in members], self.now)
            await conversations.reset(self.session, [r.openid for r in members])
        return len(members)

    async def target_teams(self, team_ids: Any, wave: int) -> tuple[int, int, int]:
        return await _target_teams(self.session, self.services, self.c, list(team_ids), wave, self.now)

    def event(self, kind: str, **detail: Any) -> None:
        repo.add_event(self.session, self.c.id, kind, self.now, **detail)


async def run_step(session: AsyncSession, services: Services, callup_id: int, now: datetime) -> str | None:
    """Run the call-up's next escalation step if it is (still) due; returns its kind, or None.

    Re-reads the call-up under its row lock, so two schedulers (or a tick racing an answer that
    fills the call-up) never run a step twice or after the call-up filled."""
    c = await lock_callup(session, callup_id)
    if c is None or c.state != OPEN or c.next_due_at is None or c.next_due_at > now or c.step >= len(c.chain):
        if c is not None and c.state == OPEN and c.next_due_at is not None and c.step >= len(c.chain):
            c.next_due_at = None  # a pointer past the end: nothing left to do
        return None
    chain = steps.load_chain(c.chain)
    index = c.step
    step = chain[index]
    event = await step.run(_Escalation(session, services, c, now), index)
    c.step = index + 1
    c.next_due_at = (now + timedelta(minutes=chain[c.step].wait_min)) if c.step < len(chain) else None
    await session.flush()
    await notify_staff(session, services, c, event, f"step:{index}", now)
    return step.kind


# ---------------------------------------------------------------------------------------------------
# Closing


async def close_callup(session: AsyncSession, services: Services, callup_id: int, by: str,
                       now: datetime) -> tuple[CallUp, dict[str, Any], bool]:
    """Close a call-up: escalation stops and everyone who said they are coming is told it is over.

    Returns (call-up, final roster, closed_now) — closed_now False when it was already closed; when
    closed now the roster has ``told``, how many members were told."""
    c = await lock_callup(session, callup_id)
    if c is None:
        raise CallupError(f"没有编号为 {callup_id} 的集结")
    if c.state == CLOSED:
        return c, await roster(session, services, c, now), False
    c.state, c.closed_at, c.closed_by, c.next_due_at = CLOSED, now, by[:64], None
    await session.flush()
    members = await repo.members_coming(session, c.id, unbound=sms_enabled(services))
    urls = await answer_links(session, services.config, c, [(m.id, m.openid) for m in members if m.openid], now)
    text = f"【集结结束】{texts.label(c)}\n本次集结已结束，感谢您的响应！未出发的无需再前往。"
    pushes = [Push(openid=m.openid or "", purpose="callup", key=f"callup:{c.id}:closed:{m.id}", text=text,
                   data={"title": f"【集结结束】{texts.label(c)}", "place": c.place,
                         "time": fmt_local(now, _tz(services)), "content": "本次集结已结束，感谢您的响应！",
                         "url": urls.get(m.id, ""), "drill": c.drill, "callup_id": c.id,
                         "phone": m.phone},
                   url=urls[m.id], priority=HIGH, ref_type="callup", ref_id=c.id)
              if m.openid else
              # A member without WeChat who answered (by SMS) is told by SMS, without a link.
              Push(openid="", purpose="callup_sms", key=f"callup:{c.id}:closed:{m.id}", text=text,
                   data={"callup_id": c.id, "member_id": m.id, "drill": c.drill}, priority=HIGH,
                   ref_type="callup", ref_id=c.id, sms_to=m.phone)
              for m in members]
    if pushes:
        await enqueue(session, pushes, now)
    r = await roster(session, services, c, now)
    r["told"] = len(pushes)
    await _event(session, c, "closed", now, by, told=len(pushes), confirmed=r["confirmed"], late=r["late"])
    await notify_staff(session, services, c, "集结已结束。" + texts.closed_text(len(pushes)), "closed", now,
                       exclude=(by,), roster_now=r)
    return c, r, True


async def active_callups(session: AsyncSession) -> list[CallUp]:
    """Open and filled call-ups, newest first."""
    return await repo.active_callups(session)


# ---------------------------------------------------------------------------------------------------
# Auditing (the manner of Grafana OnCall's escalation auditor)


@dataclass
class AuditAlert:
    """A problem the auditor told staff about."""

    callup_id: int
    problem: str  # "overdue:<step>" or "failing"
    text: str


async def audit(session: AsyncSession, services: Services, now: datetime) -> list[AuditAlert]:
    """Check every active call-up and alert staff (once per problem, recorded as an ``audit_alert``
    event) when its next escalation step is overdue by ``callup.audit_overdue_min`` — the escalation
    tick did not run or keeps failing on it — or when its member pushes keep failing (failed, or
    retried twice or more: at least ``audit_min_failed`` and ``audit_failed_pct`` % of them).
    Returns the alerts raised now."""
    cfg = services.config.callup
    raised: list[AuditAlert] = []
    for c in await repo.active_callups(session):
        problems: list[tuple[str, str]] = []
        if (c.state == OPEN and c.next_due_at is not None and c.step < len(c.chain)
                and c.next_due_at <= now - timedelta(minutes=cfg.audit_overdue_min)):
            late = int((now - c.next_due_at).total_seconds() // 60)
            step = steps.load_step(c.chain[c.step], c.step)
            problems.append((f"overdue:{c.step}",
                             f"⚠ 升级通知已超时 {late} 分钟未执行（{step.label()}）。请检查 vetbot 服务是否在运行，"
                             "并电话联系未回复的队员。"))
        by, reasons = await repo.push_results(session, c.id)
        # The SMS to members without WeChat count too: a member they miss was reached by nobody.
        sms_by, sms_reasons = await repo.push_results(session, c.id, "callup_sms")
        by = {k: by.get(k, 0) + sms_by.get(k, 0) for k in {*by, *sms_by}}
        reasons = sorted(reasons + sms_reasons, key=lambda rn: -rn[1])
        total = sum(n for k, n in by.items() if k != "retrying")
        failing = by.get("failed", 0) + by.get("retrying", 0)
        if failing >= cfg.audit_min_failed and failing * 100 >= cfg.audit_failed_pct * max(total, 1):
            why = "；".join(f"{r[:40]} {n} 条" for r, n in reasons[:2])
            problems.append(("failing", f"⚠ 集结通知有 {failing}/{total} 条发送失败或反复重试（{why}）。请电话通知"
                                        "未收到的队员，并检查模板消息或短信设置（vetbot outbox status）。"))
        if not problems:
            continue
        done = {d.get("problem") for d in await repo.event_details(session, c.id, ("audit_alert",))}
        for key, text in problems:
            if key in done:
                continue
            repo.add_event(session, c.id, "audit_alert", now, problem=key)
            await notify_staff(session, services, c, text, f"audit:{key}", now)
            raised.append(AuditAlert(c.id, key, text))
    return raised
