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
from functools import lru_cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from flows.api import Config, ConfigError, JobLinks, TickContext, on_startup, plain_text, tick
from flows.jobs.matching import Criteria, PostingView, SubscriptionIndex, Thresholds, plan
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
    JobPosting,
    JobSubscription,
    active_postings_after,
    cancel_expired_pushes,
    deliverable_rows,
    digests_done,
    existing_keys,
    insert_digests,
    insert_postings,
    instant_counts,
    lock_jobs,
    max_posting_id,
    record_sent,
    schedule_digests,
    sent_pairs,
    set_next_digest,
)
from storage.models import OutboxMessage
from storage.outbox import LOW, NORMAL, Push, enqueue

#: Digest subscriptions handled per transaction by the digest job.
DIGEST_BATCH = 2000


@dataclass(frozen=True, eq=False)  # hashed by identity (lru caches key on it)
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
    """The matching criteria of a subscription (identical subscriptions share one object)."""
    return _criteria(tuple(sub.places), tuple(sub.keywords), tuple(sub.categories), sub.min_salary, sub.job_type, s)


@lru_cache(maxsize=65536)
def _criteria(places: tuple[str, ...], keywords: tuple[str, ...], categories: tuple[str, ...], min_salary: int,
              job_type: str, s: JobsSettings) -> Criteria:
    return Criteria.of(places, keywords, categories, s.categories, min_salary, job_type)


# ---------------------------------------------------------------------------------------------------
# Links


def epoch_of(now: datetime) -> float:
    return now.replace(tzinfo=UTC).timestamp()


async def job_links(session: AsyncSession, config: Config, openids: Any, now: datetime) -> JobLinks:
    """Per-person job page links (opaque tokens in the database, :class:`bot.links.JobLinks`), valid
    ``jobs.link_ttl_days``."""
    return await JobLinks.issue(session, config, list(openids), now, settings(config).link_ttl_s)


async def posting_link(session: AsyncSession, config: Config, openid: str, posting_id: int, now: datetime) -> str:
    """A person's absolute link to a posting's page (for pushes)."""
    return (await job_links(session, config, [openid], now)).posting(openid, posting_id)


async def posting_path(session: AsyncSession, config: Config, openid: str, posting_id: int, now: datetime) -> str:
    """A person's path of a posting's page (``/jobs/p/<token>?p=<id>``)."""
    return (await job_links(session, config, [openid], now)).posting_path(openid, posting_id)


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
    subs = await deliverable_rows(session)
    report.subscribers = len(subs)
    live = [p for p in postings if p.expires_at is None or p.expires_at > now]
    if not subs or not live:
        return report
    by_id = {p.id: p for p in live}
    index = SubscriptionIndex([criteria_of(sub, s) for sub in subs])
    # When each instant subscriber can be reached (end of their quiet hours), computed once per window.
    windows: dict[tuple[int, int], datetime] = {}
    dues: list[datetime] = []
    for sub in subs:
        w = (sub.quiet_start, sub.quiet_end)
        if w not in windows:
            windows[w] = deliverable_at(now, *w, s.tz)
        dues.append(windows[w] if sub.mode == INSTANT else datetime.min)
    days = {d: local_day(d, s.tz) for d in windows.values()}
    counts = await instant_counts(session, set(days.values()))
    rooms = [s.cap - counts.get((sub.openid, days[dues[i]]), 0) if sub.mode == INSTANT else 0
             for i, sub in enumerate(subs)]
    reachable = Thresholds(dues)
    everyone = index.all

    def allowed(p: PostingView) -> int:
        # A posting that expires before the subscriber's quiet hours end is not pushed to them.
        return everyone if p.expires_at is None else reachable.below(p.expires_at)

    result = plan(index, [PostingView.of(p) for p in live], rooms, allowed=allowed)
    signer = await job_links(session, config, [sub.openid for i, sub in enumerate(subs)
                                               if sub.mode == INSTANT and result.picked.get(i)], now)
    parts: dict[int, tuple[str, dict[str, str]]] = {}
    next_at: dict[tuple[int, int, int], datetime] = {}
    pushes: list[Push] = []
    sent_rows: list[dict[str, Any]] = []
    digests: list[tuple[int, datetime]] = []
    for i, sub in enumerate(subs):
        n = result.counts[i]
        if n <= 0:
            continue
        report.matched_users += 1
        picked = result.picked.get(i, [])
        if sub.mode == INSTANT:
            day = days[dues[i]]
            for pid in picked:
                if pid not in parts:
                    parts[pid] = alert_parts(by_id[pid])
                pushes.append(instant_push(config, sub.openid, by_id[pid], now, dues[i], signer, parts[pid]))
                sent_rows.append({"openid": sub.openid, "posting_id": pid, "kind": INSTANT, "day": day,
                                  "created_at": now})
            if n <= len(picked):
                continue  # everything went out now; nothing rolls over
        when = (sub.digest_minute, sub.quiet_start, sub.quiet_end)
        if when not in next_at:
            next_at[when] = next_daily(now, *when, s.tz)
        digests.append((sub.id, next_at[when]))
    await enqueue(session, pushes, now)
    await record_sent(session, sent_rows)
    await schedule_digests(session, digests)
    report.instant_pushes += len(pushes)
    report.digests_scheduled += len(digests)
    return report


def instant_push(config: Config, openid: str, p: JobPosting, now: datetime, due: datetime,
                 signer: JobLinks, parts: tuple[str, dict[str, str]] | None = None) -> Push:
    """The instant alert of one posting to one user (``signer``: the run's :func:`job_links`; ``parts``:
    :func:`alert_parts` of ``p``, when the caller sends the same posting to many users)."""
    text, data = parts or alert_parts(p)
    url = signer.posting(openid, p.id)
    return Push(openid=openid, purpose="job_alert", key=f"job:{p.id}", text=text, data=data, url=url,
                priority=NORMAL, due_at=due, ref_type=REF_POSTING, ref_id=p.id)


def alert_parts(p: JobPosting) -> tuple[str, dict[str, str]]:
    """Text and template fields of a posting's alert (the same for every recipient)."""
    salary = salary_text(p.salary_min, p.salary_max)
    deadline = deadline_text(p.deadline)
    return alert_text(p), {
        "title": f"新岗位：{p.title}", "content": f"{p.company}｜{p.location}｜{salary}", "time": f"截止{deadline}",
        "company": p.company, "job": p.title, "location": p.location, "salary": salary, "deadline": deadline,
        "job_type": p.job_type, "veteran_priority": "是" if p.veteran_priority else "否",
    }


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
    subs = await deliverable_rows(session, due_before=now, limit=limit)
    rep.due = len(subs)
    later: list[tuple[int, datetime | None]] = []
    ready = []
    for sub in subs:
        due = deliverable_at(now, sub.quiet_start, sub.quiet_end, s.tz)
        if due > now:
            later.append((sub.id, due))  # quiet hours: try again when they end
        else:
            ready.append(sub)
    day = local_day(now, s.tz)
    key = f"jobdigest:{day.isoformat()}"
    taken = set((await session.execute(
        select(OutboxMessage.openid).where(OutboxMessage.idempotency_key.in_([f"{sub.openid}:{key}" for sub in ready]))
    )).scalars()) if ready else set()
    if taken:
        # One digest a day: today's went out already (the time was changed); the rest waits for tomorrow.
        tomorrow = next_local_midnight(now, s.tz)
        later += [(sub.id, next_daily(tomorrow, sub.digest_minute, sub.quiet_start, sub.quiet_end, s.tz))
                  for sub in ready if sub.openid in taken]
        ready = [sub for sub in ready if sub.openid not in taken]
    rep.deferred = len(later)
    await set_next_digest(session, later)
    if not ready:
        return rep
    upto = await max_posting_id(session)
    low = min(sub.cursor for sub in ready)
    postings = {p.id: p for p in await active_postings_after(session, low, upto, now)}
    pos = {sub.openid: i for i, sub in enumerate(ready)}
    skip = [(pos[o], pid) for o, pid in await sent_pairs(session, list(pos), low)]
    crit = [criteria_of(sub, s) for sub in ready]
    cursors = Thresholds([sub.cursor for sub in ready])
    result = plan(SubscriptionIndex(crit), [PostingView.of(p) for p in postings.values()],
                  [s.digest_size] * len(ready), allowed=lambda p: cursors.below(p.id), skip=skip)
    made = [(i, sub) for i, sub in enumerate(ready) if result.counts[i] > 0 and result.picked.get(i)]
    rep.empty = len(ready) - len(made)
    ids = await insert_digests(session, [
        {"openid": sub.openid, "day": day, "after_id": sub.cursor, "upto_id": upto,
         "criteria": criteria_snapshot(crit[i]), "shown_ids": result.picked[i], "total": result.counts[i],
         "created_at": now} for i, sub in made])
    pushes: list[Push] = []
    sent_rows: list[dict[str, Any]] = []
    links = await job_links(session, config, [sub.openid for _, sub in made], now)
    for digest_id, (i, sub) in zip(ids, made, strict=True):
        top, total = result.picked[i], result.counts[i]
        pushes.append(digest_push(config, sub.openid, digest_id, [postings[pid] for pid in top], total, now,
                                  day.isoformat(), links.digest(sub.openid, digest_id)))
        sent_rows += [{"openid": sub.openid, "posting_id": pid, "kind": DAILY, "day": day, "created_at": now}
                      for pid in top]
        rep.postings_listed += total
    rep.sent = len(made)
    await enqueue(session, pushes, now)
    await record_sent(session, sent_rows)
    await digests_done(session, [sub.id for sub in ready], upto)
    return rep


def criteria_snapshot(c: Criteria) -> dict[str, Any]:
    """What a digest matched against, stored with it (the "see all" page lists the same postings)."""
    return {"places": list(c.places), "words": list(c.words), "min_salary": c.min_salary, "job_type": c.job_type}


def criteria_from_snapshot(d: dict[str, Any]) -> Criteria:
    return Criteria(tuple(d.get("places") or ()), tuple(d.get("words") or ()), int(d.get("min_salary") or 0),
                    str(d.get("job_type") or ""))


def digest_push(config: Config, openid: str, digest_id: int, top: Sequence[JobPosting], total: int,
                now: datetime, day: str, url: str) -> Push:
    """The daily digest push: the best postings and a link to all of them."""
    lines = [f"【岗位日报】为您找到 {total} 个新岗位" + ("，精选如下：" if total > len(top) else "：")]
    for n, p in enumerate(top, 1):
        star = "★" if p.veteran_priority else ""
        lines.append(f"{n}. {plain_text(p.title)}｜{plain_text(p.location)}｜{salary_text(p.salary_min, p.salary_max)}{star}")
    lines.append("点链接查看全部和联系方式；回复“我的订阅”可修改或退订。")
    titles = "、".join(p.title for p in top[:3])
    return Push(
        openid=openid, purpose="job_alert", key=f"jobdigest:{day}", text="\n".join(lines),
        data={"title": f"今日为您找到 {total} 个新岗位", "content": titles + ("等" if total > 3 else ""),
              "time": day, "count": str(total)},
        url=url, priority=LOW, ref_type="job_digest", ref_id=digest_id,
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
