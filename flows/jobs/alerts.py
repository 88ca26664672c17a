"""Storing imported postings and pushing them: instant alerts on import, the daily digest job, expiry.

* :func:`store_postings` (``vetbot jobs import``) inserts new postings, updates re-imported ones and,
  in the same transaction, matches the new ones against every deliverable subscription: instant
  subscribers get one push per posting (best first, at most ``jobs.instant_max_per_day`` per local
  day, nothing inside their quiet hours — ``due_at`` moves to the end of them); whatever does not
  fit, and everything for daily subscribers, schedules the subscriber's next digest.
* :func:`run_digests` (tick ``jobs_digest``) builds each due digest from the postings newer than the
  subscriber's cursor that match, were never pushed to them and have not expired: the best
  ``jobs.digest_size`` go in the push, all of them on the "see all" page.
* :func:`expire_due` (tick ``jobs_expire``) cancels queued alerts of postings that expired.

Pushes are keyed ``job:<posting id>`` (instant) and ``jobdigest:<local date>`` (digest) per user, and
every pushed posting is written to the sent log, so nobody gets the same posting twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Config, ConfigError
from bot.links import sign
from flows.api import TickContext, on_startup, tick
from flows.jobs.matching import Criteria, PostingView, SubscriptionIndex, score
from flows.jobs.texts import alert_text, deadline_text, salary_text
from flows.jobs.timeutil import (
    deliverable_at,
    local_day,
    next_daily,
    next_local_midnight,
    parse_hm,
    parse_range,
)
from storage.jobs import (
    DAILY,
    INSTANT,
    POSTING_FIELDS,
    REF_POSTING,
    JobDigest,
    JobPosting,
    JobSubscription,
    active_postings_after,
    cancel_expired_pushes,
    deliverable_subscriptions,
    existing_keys,
    insert_postings,
    instant_counts,
    lock_jobs,
    max_posting_id,
    record_sent,
    schedule_digests,
    sent_pairs,
)
from storage.models import OutboxMessage
from storage.outbox import LOW, NORMAL, Push, enqueue

#: Digest subscriptions handled per transaction by the digest job.
DIGEST_BATCH = 500


@dataclass(frozen=True)
class JobsSettings:
    """``jobs:`` of the config, parsed and checked."""

    tz: str
    cap: int
    digest_size: int
    page_size: int
    digest_minute: int
    quiet: tuple[int, int]
    link_ttl_s: float
    categories: dict[str, list[str]]

    @classmethod
    def of(cls, config: Config) -> JobsSettings:
        j = config.jobs
        minute = parse_hm(j.default_digest_time)
        if minute is None:
            raise ConfigError(f"jobs.default_digest_time: {j.default_digest_time!r} is not a time (e.g. \"08:00\")")
        quiet = (0, 0) if not j.default_quiet_hours.strip() else parse_range(j.default_quiet_hours)
        if quiet is None:
            raise ConfigError(f"jobs.default_quiet_hours: {j.default_quiet_hours!r} is not a range "
                              "(e.g. \"22:00-07:00\", or \"\" for none)")
        for name in ("instant_max_per_day", "digest_size", "page_size", "link_ttl_days"):
            if getattr(j, name) < (0 if name == "instant_max_per_day" else 1):
                raise ConfigError(f"jobs.{name}: {getattr(j, name)} is too small")
        if not 1 <= j.page_size <= 8:
            raise ConfigError("jobs.page_size: use 1-8 (numbered choices must fit a phone screen)")
        bad = [k for k, words in j.categories.items() if not k.strip() or not words]
        if bad:
            raise ConfigError(f"jobs.categories.{bad[0]}: give the category a name and at least one word")
        if len(j.categories) > 10:
            raise ConfigError("jobs.categories: at most 10 categories (they are offered as a numbered list)")
        return cls(config.bot.timezone, j.instant_max_per_day, j.digest_size, j.page_size, minute, quiet,
                   j.link_ttl_days * 86400.0, dict(j.categories))


_SETTINGS: dict[int, tuple[Config, JobsSettings]] = {}


def settings(config: Config) -> JobsSettings:
    """Parsed ``jobs:`` settings of ``config`` (cached per config object)."""
    hit = _SETTINGS.get(id(config))
    if hit is None or hit[0] is not config:
        hit = (config, JobsSettings.of(config))
        _SETTINGS[id(config)] = hit
    return hit[1]


@on_startup
async def _check_settings(services: Any) -> None:
    # A typo in jobs: stops the start with the key named, instead of failing at the first import.
    settings(services.config)


def criteria_of(sub: JobSubscription, s: JobsSettings) -> Criteria:
    return Criteria.of(sub.places, sub.keywords, sub.categories, s.categories, sub.min_salary, sub.job_type)


# ---------------------------------------------------------------------------------------------------
# Links


def epoch_of(now: datetime) -> float:
    return now.replace(tzinfo=UTC).timestamp()


def posting_link(config: Config, openid: str, posting_id: int, now: datetime) -> str:
    """Signed per-user link to a posting's page."""
    token = sign(config, {"k": "jp", "u": openid, "p": posting_id}, settings(config).link_ttl_s, now=epoch_of(now))
    return f"{config.server.public_url.rstrip('/')}/jobs/p/{token}"


def digest_link(config: Config, openid: str, digest_id: int, now: datetime) -> str:
    """Signed per-user link to the "see all" page of a digest."""
    token = sign(config, {"k": "jd", "u": openid, "d": digest_id}, settings(config).link_ttl_s, now=epoch_of(now))
    return f"{config.server.public_url.rstrip('/')}/jobs/d/{token}"


# ---------------------------------------------------------------------------------------------------
# Import


@dataclass
class StoreReport:
    """What an import did."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0
    subscribers: int = 0  # deliverable subscriptions matched against
    matched_users: int = 0  # subscribers with at least one new matching posting
    instant_pushes: int = 0
    digests_scheduled: int = 0
    new_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("new_ids")
        return d


async def store_postings(session: AsyncSession, rows: list[dict[str, Any]], now: datetime, config: Config, *,
                         notify: bool = True, progress: Callable[[int], None] | None = None) -> StoreReport:
    """Insert new postings, update re-imported ones (same natural key) and queue their alerts — all in
    the caller's transaction. ``rows`` come from :func:`flows.jobs.csvimport.read_postings`."""
    report = StoreReport()
    await lock_jobs(session)
    existing = await existing_keys(session, [r["natural_key"] for r in rows])
    fresh: list[dict[str, Any]] = []
    for r in rows:
        old = existing.get(r["natural_key"])
        if old is None:
            fresh.append(r)
            continue
        changed = False
        for f in POSTING_FIELDS:
            if getattr(old, f) != r[f]:
                setattr(old, f, r[f])
                changed = True
        if changed:
            old.updated_at = now
            report.updated += 1
        else:
            report.unchanged += 1
        if progress:
            progress(1)
    new: list[JobPosting] = []
    for i in range(0, len(fresh), 1000):
        new += await insert_postings(session, fresh[i:i + 1000], now)
        if progress:
            progress(len(fresh[i:i + 1000]))
    report.new = len(new)
    report.new_ids = [p.id for p in new]
    if notify and new:
        await fan_out(session, new, now, config, report)
    return report


async def fan_out(session: AsyncSession, postings: Sequence[JobPosting], now: datetime, config: Config,
                  report: StoreReport | None = None) -> StoreReport:
    """Match new ``postings`` against every deliverable subscription and queue instant alerts /
    schedule digests (in the caller's transaction, which holds :func:`lock_jobs`)."""
    report = report or StoreReport()
    s = settings(config)
    subs = await deliverable_subscriptions(session)
    report.subscribers = len(subs)
    live = [p for p in postings if p.expires_at is None or p.expires_at > now]
    if not subs or not live:
        return report
    crit = [criteria_of(sub, s) for sub in subs]
    index = SubscriptionIndex(crit)
    per: dict[int, list[tuple[float, int, JobPosting]]] = {}
    for p in live:
        view = PostingView.of(p)
        for i in index.who(view):
            per.setdefault(i, []).append((score(crit[i], view), p.id, p))
    report.matched_users = len(per)
    due_of: dict[int, datetime] = {}
    for i in per:
        sub = subs[i]
        if sub.mode == INSTANT:
            due_of[i] = deliverable_at(now, sub.quiet_start, sub.quiet_end, s.tz)
    counts = await instant_counts(session, {local_day(d, s.tz) for d in due_of.values()})
    pushes: list[Push] = []
    sent_rows: list[dict[str, Any]] = []
    digests: list[tuple[int, datetime]] = []
    for i, found in per.items():
        sub = subs[i]
        found.sort(key=lambda t: (-t[0], -t[1]))
        if sub.mode == INSTANT:
            due = due_of[i]
            day = local_day(due, s.tz)
            room = s.cap - counts.get((sub.openid, day), 0)
            overflow = False
            for _, pid, p in found:
                if p.expires_at is not None and p.expires_at <= due:
                    continue  # it would expire before the quiet hours end
                if room <= 0:
                    overflow = True
                    continue
                room -= 1
                pushes.append(instant_push(config, sub.openid, p, now, due))
                sent_rows.append({"openid": sub.openid, "posting_id": pid, "kind": INSTANT, "day": day,
                                  "created_at": now})
            if overflow:
                digests.append((sub.id, next_daily(now, sub.digest_minute, sub.quiet_start, sub.quiet_end, s.tz)))
        else:
            digests.append((sub.id, next_daily(now, sub.digest_minute, sub.quiet_start, sub.quiet_end, s.tz)))
    await enqueue(session, pushes, now)
    await record_sent(session, sent_rows)
    await schedule_digests(session, digests)
    report.instant_pushes += len(pushes)
    report.digests_scheduled += len(digests)
    return report


def instant_push(config: Config, openid: str, p: JobPosting, now: datetime, due: datetime) -> Push:
    """The instant alert of one posting to one user."""
    salary = salary_text(p.salary_min, p.salary_max)
    return Push(
        openid=openid, purpose="job_alert", key=f"job:{p.id}", text=alert_text(p),
        data={"title": f"新岗位：{p.title}", "content": f"{p.company}｜{p.location}｜{salary}",
              "time": f"截止{deadline_text(p.deadline)}", "company": p.company, "job": p.title,
              "location": p.location, "salary": salary, "job_type": p.job_type,
              "deadline": deadline_text(p.deadline), "veteran_priority": "是" if p.veteran_priority else "否"},
        url=posting_link(config, openid, p.id, now), priority=NORMAL, due_at=due,
        ref_type=REF_POSTING, ref_id=p.id,
    )


# ---------------------------------------------------------------------------------------------------
# Digest


@dataclass
class DigestReport:
    due: int = 0
    sent: int = 0
    empty: int = 0
    deferred: int = 0
    postings_listed: int = 0


async def run_digests(session: AsyncSession, now: datetime, config: Config, limit: int = DIGEST_BATCH) -> DigestReport:
    """Build and queue the digests due at ``now`` (at most ``limit`` subscribers) in one transaction."""
    rep = DigestReport()
    s = settings(config)
    await lock_jobs(session)
    subs = await deliverable_subscriptions(session, due_before=now, limit=limit)
    rep.due = len(subs)
    ready: list[JobSubscription] = []
    for sub in subs:
        due = deliverable_at(now, sub.quiet_start, sub.quiet_end, s.tz)
        if due > now:
            sub.next_digest_at = due  # quiet hours: try again when they end
            rep.deferred += 1
        else:
            ready.append(sub)
    if not ready:
        return rep
    upto = await max_posting_id(session)
    low = min(sub.cursor for sub in ready)
    postings = await active_postings_after(session, low, upto, now)
    sent = await sent_pairs(session, [sub.openid for sub in ready], low)
    crit = [criteria_of(sub, s) for sub in ready]
    index = SubscriptionIndex(crit)
    per: dict[int, list[tuple[float, int, JobPosting]]] = {}
    for p in postings:
        view = PostingView.of(p)
        for i in index.who(view):
            sub = ready[i]
            if p.id > sub.cursor and (sub.openid, p.id) not in sent:
                per.setdefault(i, []).append((score(crit[i], view), p.id, p))
    day = local_day(now, s.tz)
    keys = {f"{sub.openid}:jobdigest:{day.isoformat()}" for sub in ready}
    taken = set((await session.execute(
        select(OutboxMessage.idempotency_key).where(OutboxMessage.idempotency_key.in_(list(keys)))
    )).scalars())
    sent_rows: list[dict[str, Any]] = []
    for i, sub in enumerate(ready):
        found = sorted(per.get(i, []), key=lambda t: (-t[0], -t[1]))
        if not found:
            sub.cursor, sub.next_digest_at = upto, None
            rep.empty += 1
            continue
        if f"{sub.openid}:jobdigest:{day.isoformat()}" in taken:
            # One digest a day: today's went out already (the time was changed); the rest waits.
            sub.next_digest_at = next_daily(next_local_midnight(now, s.tz), sub.digest_minute,
                                            sub.quiet_start, sub.quiet_end, s.tz)
            rep.deferred += 1
            continue
        top = found[: s.digest_size]
        digest = JobDigest(openid=sub.openid, day=day, posting_ids=[pid for _, pid, _ in found], shown=len(top),
                           created_at=now)
        session.add(digest)
        await session.flush()
        await enqueue(session, digest_push(config, sub.openid, digest.id, [p for _, _, p in top], len(found),
                                           now, day.isoformat()), now)
        sent_rows += [{"openid": sub.openid, "posting_id": pid, "kind": DAILY, "day": day, "created_at": now}
                      for _, pid, _ in top]
        sub.cursor, sub.next_digest_at = upto, None
        rep.sent += 1
        rep.postings_listed += len(found)
    await record_sent(session, sent_rows)
    return rep


def digest_push(config: Config, openid: str, digest_id: int, top: Sequence[JobPosting], total: int,
                now: datetime, day: str) -> Push:
    """The daily digest push: the best postings and a link to all of them."""
    lines = [f"【岗位日报】为您找到 {total} 个新岗位" + ("，精选如下：" if total > len(top) else "：")]
    for n, p in enumerate(top, 1):
        star = "★" if p.veteran_priority else ""
        lines.append(f"{n}. {p.title}｜{p.location}｜{salary_text(p.salary_min, p.salary_max)}{star}")
    lines.append("点链接查看全部和联系方式；回复“我的订阅”可修改或退订。")
    titles = "、".join(p.title for p in top[:3])
    return Push(
        openid=openid, purpose="job_alert", key=f"jobdigest:{day}", text="\n".join(lines),
        data={"title": f"今日为您找到 {total} 个新岗位", "content": titles + ("等" if total > 3 else ""),
              "time": day, "count": str(total)},
        url=digest_link(config, openid, digest_id, now), priority=LOW, ref_type="job_digest", ref_id=digest_id,
    )


@tick("jobs_digest", 60)
async def digest_tick(t: TickContext) -> None:
    """Send every digest that is due, in batches (one transaction each)."""
    while True:
        async with t.db.session() as session:
            rep = await run_digests(session, t.now, t.services.config)
        if rep.due < DIGEST_BATCH:
            return


async def expire_due(session: AsyncSession, now: datetime) -> int:
    """Cancel queued alerts of expired postings; returns how many."""
    return await cancel_expired_pushes(session, now)


@tick("jobs_expire", 600)
async def expire_tick(t: TickContext) -> None:
    """Nothing goes out for a posting past its deadline, even if it was queued for after quiet hours."""
    async with t.db.session() as session:
        await expire_due(session, t.now)
