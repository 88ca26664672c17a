"""The outbox sender: delivers queued pushes under WeChat's rules, at least once, never losing one.

Pushes are rows written by features in the same transaction as the change that causes them
(:func:`storage.outbox.enqueue`). :class:`OutboxSender` claims due rows in batches
(:mod:`storage.outbox_repo`), delivers them with bounded concurrency and an optional rate per API
path, and writes the results back in groups.

Channel policy, decided per row when it is sent (not when it is queued):

1. **kefu** (customer-service text) while the user's window is open and its quota not spent: 48 h
   and 5 messages after the user wrote, 1 min and 3 messages after a menu click / follow / scan. A
   slot is taken atomically in ``users.kefu_sent`` before sending (the dispatcher resets the count
   when the user interacts).
2. **subscribe** (订阅通知, ``bizsend``) when ``templates.<purpose>.subscribe`` is configured and the
   person gave consent for that template (:mod:`storage.subscribe`; a one-time consent is spent
   atomically before sending, a long-term one is kept).
3. **template** when ``templates.<purpose>`` is configured and WeChat's rules allow a template
   message for the purpose (:data:`TEMPLATE_BASIS`: disaster warnings, or what the person asked for).
   Fields are keyword fields only, each filled from the push and shortened to its type's rule by
   :class:`TemplateRenderer`; a push without a page of its own links its full text (``/msg/…``).
4. **sms** through the webhook (:mod:`bot.sms`) when configured and the user has a phone.
5. otherwise ``failed`` with ``no channel`` (and why the others were skipped).

45015 (window closed) / 45047 (count used up) / 43101 (no 订阅通知 consent) / 47003 (a value WeChat
refuses) / 40037 (unknown template id) put the channel in ``skipped_channels`` and move on to the
next channel at once; the last two are configuration problems and are logged as errors. Every push
that ends ``failed`` is logged once with its reason (never its text). Users who unfollowed get
nothing (``cancelled``). Transient errors (-1, 45009, 45011, timeouts, HTTP 5xx, dropped
connections) retry with exponential backoff and jitter up to ``outbox.max_attempts``; 45009/45011 also pause that API path until the quota resets.
Errors about the whole account rather than this message (the token cannot be fetched, the token is
refused twice, 40164 IP not whitelisted) are retried the same way, so fixing the configuration lets
queued call-ups still go out. Any other error is permanent: ``failed`` with the reason at once.

At-least-once: a row is claimed (``sending``) before it is sent and its result is committed before
its worker sends another, so at most ``outbox.concurrency`` rows per sender are *in flight* (handed
to WeChat, result not yet on disk). If the process dies, its claimed rows come back within seconds
(:class:`storage.outbox_repo.SenderLease`: on PostgreSQL when its advisory lock goes, on SQLite when
the next sender starts; ``outbox.claim_timeout_s`` is the last resort). Only the rows in flight at
the kill may reach a user twice; no other row is ever sent twice or lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import socket
import string
import uuid
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from bot.clock import fmt_local, to_local
from bot.config import Config, SubscribeSpec, TemplateSpec
from bot.links import sign_link
from bot.sms import SmsClient, SmsError
from bot.template_rules import DEFAULT_RULES, Rules, Shortened, field_kind, retired_hint, shorten
from bot.wechat_api import (
    InvalidArgument,
    InvalidTemplate,
    IPNotWhitelisted,
    NoConsent,
    OutOfWindow,
    OverQuota,
    RateLimited,
    TokenInvalid,
    WeChatClient,
    WeChatError,
)
from storage import subscribe as consent
from storage.db import Database
from storage.outbox import on_commit
from storage.outbox_repo import (
    ClaimedRow,
    Outcome,
    ResultWriter,
    SenderLease,
    UserState,
    reclaim_orphans,
    reclaim_stale,
    record_and_claim,
    release_own,
    reserve_kefu,
    touch_claims,
)
from storage.tokens import DbTokenStore

log = logging.getLogger("vetbot.outbox")

KEFU, SUBSCRIBE, TEMPLATE, SMS = "kefu", "subscribe", "template", "sms"
#: The channels in the order they are tried.
CHANNELS = (KEFU, SUBSCRIBE, TEMPLATE, SMS)
#: The API path each channel uses (rate limits and 45009/45011 pauses are per path).
CHANNEL_PATH = {KEFU: "/cgi-bin/message/custom/send", SUBSCRIBE: "/cgi-bin/message/subscribe/bizsend",
                TEMPLATE: "/cgi-bin/message/template/send", SMS: "sms"}
#: Why WeChat's rules (since 2023-05-04) let a push of each purpose go out as a template message to a
#: person outside the customer-service window: "warning" (fault and disaster warnings may reach anyone),
#: "requested" (the person asked for it: an answer to their own message or ticket, job alerts and
#: reminders they subscribed to in chat, the progress of a call-up they started), "unrequested" (nobody
#: asked: a staff broadcast; no template message, 订阅通知 where consent was given, else SMS). A push may
#: override its purpose's basis with ``data["template_basis"]`` (``vetbot broadcast --warning``).
WARNING, REQUESTED, UNREQUESTED = "warning", "requested", "unrequested"
TEMPLATE_BASIS = {
    "late_reply": REQUESTED, "ticket_reply": REQUESTED, "notice": REQUESTED,
    "callup": WARNING, "callup_progress": REQUESTED,
    "job_alert": REQUESTED, "memorial_reminder": REQUESTED,
    "broadcast": UNREQUESTED,
}
#: The set of people with 订阅通知 consent per template is read again after this many seconds.
CONSENT_CACHE_S = 5.0
#: Signed links to a push's full text (/msg/<token>) stay valid this long.
FULL_TEXT_LINK_TTL_S = 30 * 86400
TOKEN_PATH = "/cgi-bin/stable_token"
#: How often a PostgreSQL sender checks its own lease and hands back the rows of senders that died.
LIVENESS_S = 2.0
#: PostgreSQL: groups of results committed at once on separate connections (SQLite has one writer).
RESULT_ROUNDS = 4
#: ``{title}`` of a template when the push sets none (the late reply, for one, carries only text).
PURPOSE_TITLES = {
    "late_reply": "您的消息已有回复",
    "ticket_reply": "工作人员回复了您的留言",
    "callup": "应急集结通知",
    "callup_progress": "集结进展",
    "job_alert": "岗位推荐",
    "memorial_reminder": "缅怀英烈提醒",
    "broadcast": "通知",
    "notice": "通知",
    "callup_sms": "应急集结通知",
    "sms_reply": "短信回复",
}
_RID = re.compile(r"\s*(?:,\s*)?(?:hints?:\s*\[[^\]]*\]\s*)?rid:\s*[0-9a-f-]+\s*$", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------------
# Waking the sender when this process queues a push


_SENDERS: weakref.WeakSet[OutboxSender] = weakref.WeakSet()
_HOOKED = False


def _wake_senders() -> None:
    for sender in list(_SENDERS):
        sender.wake()


def _install_commit_hook() -> None:
    """Wake this process's senders when a transaction that wrote outbox rows commits.

    Listens on every ORM Session: an INSERT into ``outbox`` marks the session, and its commit wakes
    the senders. (On SQLite's batched turns the flow session commits a SAVEPOINT first; the sender
    then waits for the single connection, i.e. for the real COMMIT, before it can claim anything.)
    """
    global _HOOKED
    if _HOOKED:
        return
    _HOOKED = True

    @event.listens_for(Session, "do_orm_execute")
    def _mark(state: Any) -> None:
        if state.is_insert and getattr(getattr(state.statement, "table", None), "name", None) == "outbox":
            state.session.info["vetbot_outbox_new"] = True

    @event.listens_for(Session, "after_flush")
    def _mark_orm(session: Session, _ctx: Any) -> None:
        if any(getattr(o, "__tablename__", None) == "outbox" for o in session.new):
            session.info["vetbot_outbox_new"] = True

    @event.listens_for(Session, "after_commit")
    def _commit(session: Session) -> None:
        if session.info.pop("vetbot_outbox_new", False):
            _wake_senders()

    # Pushes queued inline on a batched SQLite turn (no ORM session): woken after the batch commits.
    on_commit(_wake_senders)

    @event.listens_for(Session, "after_soft_rollback")
    def _rollback(session: Session, _prev: Any) -> None:
        session.info.pop("vetbot_outbox_new", None)


# ---------------------------------------------------------------------------------------------------
# Templates


_Part = tuple[str, str | None, str]  # literal text, placeholder name (None: none), format spec


def _compile(pattern: str) -> list[_Part]:
    """Split a format string once into literal text and ``{name}`` / ``{name:spec}`` placeholders.

    Attribute and index access (``{a.b}``, ``{a[0]}``) is not allowed: the patterns come from the
    config, the values from users. Such a placeholder renders empty like a missing one. Raises
    ValueError for an unbalanced ``{``.
    """
    parts: list[_Part] = []
    for literal, name, spec, conversion in string.Formatter().parse(pattern):
        if name is None:
            parts.append((literal, None, ""))
            continue
        if conversion or "{" in (spec or ""):
            raise ValueError(f"{{{name}!{conversion}}} conversions and nested specs are not supported")
        parts.append((literal, name, spec or ""))
    return parts


@dataclass(frozen=True)
class _Field:
    name: str
    pattern: str
    kind: str | None  # None: a field WeChat no longer shows (first/remark), never sent
    where: str


@dataclass
class Rendered:
    """A template message or 订阅通知 ready to send: ``data`` holds only keyword fields, each shortened to
    its type's rule; ``notes`` says what was shortened or left out (``vetbot templates preview``)."""

    template_id: str
    data: dict[str, str]
    url: str | None
    notes: list[str] = field(default_factory=list)


class TemplateRenderer:
    """Builds template messages and 订阅通知 from ``templates:`` under WeChat's rules of today.

    Each keyword field's format string is filled from the push, then the value is made to fit its type
    (:func:`bot.template_rules.shorten`): a ``thing`` keeps its start and ends with …, a time is written
    short, line breaks and emoji go. We shorten, so WeChat never cuts. Fields WeChat no longer shows
    (``first``/``remark``) are never sent. Format strings are parsed once per pattern; a push is rendered
    by plain concatenation (the sender renders thousands a second during a call-up fan-out).
    Each problem (a missing placeholder, a value that had to be cut or left out) is logged once per
    (purpose, field).
    """

    def __init__(self, templates: Mapping[str, TemplateSpec], tz: str = "Asia/Shanghai",
                 rules: Rules = DEFAULT_RULES) -> None:
        self.templates = templates
        self.tz = tz
        self.rules = rules
        self._warned: set[tuple[str, str]] = set()
        self._compiled: dict[str, list[_Part] | None] = {}
        # A fan-out sends the same title, place and time to every member: shorten each value once.
        self._fits: dict[tuple[str, str, int | None, bool], Shortened] = {}
        self._years: dict[datetime, int] = {}
        self._plans: dict[tuple[str, str], tuple[list[_Field], bool]] = {}

    def _fit(self, kind: str, text: str, year: int | None, subscribe: bool) -> Shortened:
        key = (kind, text, year, subscribe)
        fit = self._fits.get(key)
        if fit is None:
            if len(self._fits) >= 4096:
                self._fits.clear()
            fit = self._fits[key] = shorten(kind, text, self.rules, year=year, subscribe=subscribe)
        return fit

    def has(self, purpose: str) -> bool:
        """Whether a template message is configured for ``purpose``."""
        spec = self.templates.get(purpose)
        return spec is not None and bool(spec.template_id)

    def subscribe_spec(self, purpose: str) -> SubscribeSpec | None:
        """The purpose's 订阅通知 template, or None when it has none."""
        spec = self.templates.get(purpose)
        sub = spec.subscribe if spec is not None else None
        return sub if sub is not None and sub.template_id else None

    @staticmethod
    def value(name: str, payload: Mapping[str, Any], purpose: str = "", created_at: datetime | None = None,
              tz: str = "Asia/Shanghai") -> Any:
        """The value of placeholder ``name``: the push's ``data``, then ``text``/``url``, then defaults.

        ``title``, ``content`` and ``time`` are promised to every template: when a push does not set
        them (the dispatcher's late reply carries only its text) they default to a title for the
        purpose, the text, and the local time the push was queued. None = no value.
        """
        data = payload.get("data")
        if name == "text":
            return payload.get("text") or ""
        if name == "url":
            return payload.get("url") or (data.get("url") if isinstance(data, Mapping) else None) or ""
        v = data.get(name) if isinstance(data, Mapping) else None
        if v is not None and v != "":
            return v
        if name == "title":
            return PURPOSE_TITLES.get(purpose) or None
        if name == "content":
            return payload.get("text") or None
        if name == "time" and created_at is not None:
            return fmt_local(created_at, tz)
        return None

    @classmethod
    def values(cls, payload: Mapping[str, Any], purpose: str = "", created_at: datetime | None = None,
               tz: str = "Asia/Shanghai") -> dict[str, Any]:
        """Every placeholder value of a push (for the SMS body template)."""
        data = payload.get("data")
        names = {"title", "content", "time", "text", "url", *(data if isinstance(data, Mapping) else ())}
        out = {n: cls.value(n, payload, purpose, created_at, tz) for n in names}
        return {k: v for k, v in out.items() if v is not None}

    def _fmt(self, purpose: str, where: str, pattern: str, payload: Mapping[str, Any],
             created_at: datetime | None) -> str:
        if pattern not in self._compiled:
            try:
                self._compiled[pattern] = _compile(pattern)
            except ValueError as e:
                self._compiled[pattern] = None
                self._warn(purpose, f"{where}: bad format string {pattern!r} ({e}); sent as written")
        parts = self._compiled[pattern]
        if parts is None:
            return pattern
        out: list[str] = []
        for literal, name, spec in parts:
            out.append(literal)
            if name is None:
                continue
            v = self.value(name, payload, purpose, created_at, self.tz) if name.isidentifier() else None
            if v is None:
                self._warn(purpose, f"{where}: no value for {{{name}}}")
                continue
            try:
                out.append(format(v, spec) if spec else str(v))
            except (ValueError, TypeError):
                out.append(str(v))
        return "".join(out)

    def _warn(self, purpose: str, what: str, level: int = logging.WARNING) -> None:
        if (purpose, what) not in self._warned:
            self._warned.add((purpose, what))
            hint = " (check the push's data or the template fields)" if level >= logging.WARNING else ""
            log.log(level, "templates.%s %s%s", purpose, what, hint)

    def _plan(self, purpose: str, where: str, fields: Mapping[str, str]) -> tuple[list[_Field], bool]:
        """Each field's name, pattern, keyword type (None: a retired field, never sent) and log label,
        worked out once per template; and whether any field needs the push's year (time/date)."""
        key = (purpose, where)
        plan = self._plans.get(key)
        if plan is None:
            items = [_Field(name, pattern, None if retired_hint(name) else (field_kind(name) or "thing"),
                            f"{where}.{name}") for name, pattern in fields.items()]
            plan = self._plans[key] = (items, any(f.kind in ("time", "date") for f in items))
        return plan

    def _fields(self, purpose: str, where: str, fields: Mapping[str, str], payload: Mapping[str, Any],
                created_at: datetime | None, notes: list[str], subscribe: bool) -> dict[str, str]:
        plan, needs_year = self._plan(purpose, where, fields)
        year = None
        if needs_year and created_at is not None:
            year = self._years.get(created_at)
            if year is None:
                if len(self._years) >= 4096:
                    self._years.clear()
                year = self._years[created_at] = to_local(created_at, self.tz).year
        data: dict[str, str] = {}
        for f in plan:
            if f.kind is None:  # first/remark: WeChat shows nothing of them; never send them
                notes.append(f"{f.name}: not shown by WeChat, not sent")
                continue
            fit = self._fit(f.kind, self._fmt(purpose, f.where, f.pattern, payload, created_at), year, subscribe)
            if fit.note:
                notes.append(f"{f.name}: {fit.note}")
                if fit.value is None:
                    self._warn(purpose, f"{f.where}: {f.kind} value left out ({fit.note})")
                    continue
                if fit.cut and (purpose, f.where) not in self._warned:
                    self._warned.add((purpose, f.where))
                    log.info("templates.%s %s: values are shortened to fit a %s field (the full text is on the "
                             "linked page)", purpose, f.where, f.kind)
            data[f.name] = fit.value  # type: ignore[assignment]
        return data

    def render(self, purpose: str, payload: Mapping[str, Any], created_at: datetime | None = None,
               *, fallback_url: str | None = None) -> Rendered:
        """The template message of a push of ``purpose``. ``fallback_url`` is linked when the template's
        own url renders empty (a page with the push's full text)."""
        spec = self.templates[purpose]
        notes: list[str] = []
        data = self._fields(purpose, "fields", spec.fields, payload, created_at, notes, subscribe=False)
        url = self._fmt(purpose, "url", spec.url, payload, created_at) if spec.url else ""
        return Rendered(spec.template_id, data, url or fallback_url or None, notes)

    def render_subscribe(self, purpose: str, payload: Mapping[str, Any], created_at: datetime | None = None,
                         *, fallback_url: str | None = None) -> Rendered:
        """The 订阅通知 of a push of ``purpose`` (its own fields, or the template message's)."""
        spec = self.templates[purpose]
        sub = spec.subscribe
        assert sub is not None
        notes: list[str] = []
        data = self._fields(purpose, "subscribe.fields", sub.fields or spec.fields, payload, created_at, notes,
                            subscribe=True)
        url = self._fmt(purpose, "url", spec.url, payload, created_at) if spec.url else ""
        return Rendered(sub.template_id, data, url or fallback_url or None, notes)


# ---------------------------------------------------------------------------------------------------
# Rate limit


class RateLimiter:
    """At most ``rate`` requests per second per key, spaced evenly (0 = unlimited).

    ``time``/``sleep`` default to the event loop's clock and ``asyncio.sleep`` (tests pass fakes).
    """

    def __init__(self, rate: float, *, time: Callable[[], float] | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.rate = rate
        self._time = time
        self._sleep = sleep
        self._next: dict[str, float] = {}

    async def acquire(self, key: str) -> None:
        """Wait for this key's next free slot."""
        if self.rate <= 0:
            return
        now = self._time() if self._time is not None else asyncio.get_running_loop().time()
        slot = max(now, self._next.get(key, now))
        self._next[key] = slot + 1.0 / self.rate
        if slot > now:
            await self._sleep(slot - now)


# ---------------------------------------------------------------------------------------------------
# Sender


@dataclass
class DeliveryReport:
    """What one :meth:`OutboxSender.deliver_due` pass did."""

    claimed: int = 0
    sent: int = 0
    failed: int = 0
    cancelled: int = 0
    retried: int = 0
    reclaimed: int = 0
    by_channel: Counter[str] = field(default_factory=Counter)

    def add(self, o: Outcome) -> None:
        if o.status == "sent":
            self.sent += 1
            self.by_channel[o.channel or "-"] += 1
        elif o.status == "failed":
            self.failed += 1
        elif o.status == "cancelled":
            self.cancelled += 1
        else:
            self.retried += 1


def _reason(channel: str, exc: BaseException) -> str:
    if isinstance(exc, WeChatError) and exc.errcode is not None:
        msg = _RID.sub("", exc.errmsg).strip()
        return f"{channel}: {exc.errcode} {msg}".strip()
    if isinstance(exc, WeChatError):
        return f"{channel}: {_RID.sub('', exc.errmsg).strip()}"
    return f"{channel}: {exc}"


def _account_level(exc: WeChatError) -> bool:
    """Errors about the account or our setup, not this message: retry them (an operator can fix them)."""
    return exc.path == TOKEN_PATH or isinstance(exc, TokenInvalid | IPNotWhitelisted)


class _Retry(Exception):
    """Internal: deliver later (transient error or a paused path)."""

    def __init__(self, reason: str, *, not_before: datetime | None = None, counts: bool = True) -> None:
        super().__init__(reason)
        self.reason, self.not_before, self.counts = reason, not_before, counts


class _Skip(Exception):
    """Internal: this channel cannot carry this push (WeChat refused it for this person or this data);
    try the next one."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Fail(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutboxSender:
    """Delivers due outbox rows. Tests call :meth:`deliver_due`; ``serve`` runs :meth:`start`.

    ``clock`` is the injected clock (naive UTC ``now()``); ``client`` the WeChat API client (its
    token store should be a :class:`storage.tokens.DbTokenStore`); ``sms`` the webhook client
    (None or disabled: no SMS channel). ``worker`` names this sender in ``claimed_by``.
    """

    def __init__(self, db: Database, config: Config, clock: Any, client: WeChatClient,
                 sms: SmsClient | None = None, *, worker: str | None = None, rng: random.Random | None = None) -> None:
        self.db, self.config, self.clock, self.client = db, config, clock, client
        self.cfg = config.outbox
        self.sms = sms
        self.worker = (worker or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")[:64]
        self.templates = TemplateRenderer(config.templates, config.bot.timezone, config.template_rules.rules())
        self.limiter = RateLimiter(self.cfg.rate_per_s)
        self.rng = rng or random.Random()
        self._paused: dict[str, tuple[datetime, str]] = {}
        self._config_errors: set[tuple[str, str]] = set()
        self._consent_cache: dict[str, tuple[float, dict[str, str]]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._last_reclaim: datetime | None = None
        #: Binds this sender's claims to its life (PostgreSQL advisory lock / SQLite lock file).
        self.lease = SenderLease(db, self.worker)
        self._pass_failed = False
        self._last_live: float | None = None
        self._writer = None if db.is_sqlite else ResultWriter(db)
        #: Totals since start (for logs and tests).
        self.totals = DeliveryReport()
        _install_commit_hook()
        _SENDERS.add(self)

    # -- lifecycle ------------------------------------------------------------------------------
    def wake(self) -> None:
        """Deliver now instead of at the next poll (called after a commit that queued pushes)."""
        self._wake.set()

    def start(self) -> asyncio.Task[None]:
        """Run the delivery loop in the background until :meth:`stop`."""
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.create_task(self.run(), name=f"vetbot-outbox-{self.worker}")
        return self._task

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop claiming; let deliveries in progress finish for ``grace_s``, then cancel.

        Rows cancelled mid-send stay ``sending`` and are handed back after the claim timeout.
        """
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, grace_s)
            except (TimeoutError, asyncio.CancelledError):
                pass
            except Exception:
                log.exception("outbox sender stopped with an error")

    async def close(self) -> None:
        """Stop, give up the lease (other senders take over what is left at once) and close the clients."""
        await self.stop()
        _SENDERS.discard(self)
        await self.lease.release()
        if self._writer is not None:
            await self._writer.close()
        await self.client.close()
        if self.sms is not None:
            await self.sms.close()

    async def run(self) -> None:
        """The loop: deliver everything due, then sleep until woken or ``poll_interval_s`` passes."""
        log.info("outbox sender %s running (concurrency %d)", self.worker, self.cfg.concurrency)
        failures = 0
        while not self._stopping:
            self._wake.clear()
            pause = self.cfg.poll_interval_s
            try:
                await self._start_lease()
                await self.deliver_due()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # Usually the database is away: back off (up to 30 s) instead of logging twice a second.
                failures += 1
                pause = max(pause, min(30.0, 0.5 * 2 ** failures))
                log.error("outbox pass failed (%d in a row; next try in %.0f s): %s: %s", failures, pause,
                          type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    async def _start_lease(self) -> None:
        """Take the lease; a sender that starts alone on SQLite takes back what a stopped one left."""
        if self.lease.held:
            return
        self.worker = await self.lease.acquire()
        if self.db.is_sqlite and self.lease.sole:
            n = await reclaim_orphans(self.db, self.lease, self.cfg.max_attempts)
            if n:
                log.warning("took back %d pushes a stopped sender left in 'sending'", n)

    # -- one pass -------------------------------------------------------------------------------
    def _now(self, fixed: datetime | None) -> datetime:
        return fixed if fixed is not None else self.clock.now()

    async def _hand_back(self, t0: datetime, report: DeliveryReport, fixed: bool) -> None:
        """Rows a dead sender (or an earlier failed pass of this one) left in ``sending`` go back to pending."""
        n = 0
        if self._pass_failed:
            # The last pass ended before writing all its results (database error, lease lost): its rows
            # are still claimed under our name, and our heartbeat would keep them so.
            n += await release_own(self.db, self.worker, self.cfg.max_attempts)
            self._pass_failed = False
        tick = asyncio.get_running_loop().time()
        if not self.db.is_sqlite and (self._last_live is None or tick - self._last_live >= LIVENESS_S):
            self._last_live = tick
            n += await reclaim_orphans(self.db, self.lease, self.cfg.max_attempts)
        every = timedelta(seconds=max(1.0, min(30.0, self.cfg.claim_timeout_s / 4)))
        if fixed or self._last_reclaim is None or t0 - self._last_reclaim >= every:
            self._last_reclaim = t0
            n += await reclaim_stale(self.db, t0, self.cfg.claim_timeout_s, self.cfg.max_attempts)
        if n:
            log.warning("handed back %d pushes left in 'sending' by a stopped sender", n)
        report.reclaimed += n

    async def deliver_due(self, now: datetime | None = None) -> DeliveryReport:
        """Claim and deliver every row due at ``now`` (default: the clock), and record the results.

        Returns when all claimed rows are delivered (or rescheduled) and their results committed.

        A worker hands a row to WeChat only after the result of its previous row is committed, so at
        any moment at most ``concurrency`` rows have been sent without their result on disk: a crash
        repeats at most that many pushes. Results still share commits (one per round of the database
        loop, with the claims that top the queue up), so the fsyncs do not grow with the rows.
        """
        report = DeliveryReport()
        if not self.lease.held and not self.db.is_sqlite:
            self.worker = await self.lease.acquire()  # claims on PostgreSQL need the lease first
        await self._hand_back(self._now(now), report, now is not None)
        n_workers = max(1, self.cfg.concurrency)
        batch = max(1, self.cfg.batch_size)
        low = max(n_workers, batch // 2)
        queue: asyncio.Queue[tuple[ClaimedRow, UserState] | None] = asyncio.Queue()
        results: list[tuple[Outcome, asyncio.Future[None]]] = []
        wake = asyncio.Event()
        state = {"sentinels": False, "workers_done": False, "broken": False}
        loop = asyncio.get_running_loop()

        def end_queue() -> None:
            if not state["sentinels"]:
                state["sentinels"] = True
                for _ in range(n_workers):
                    queue.put_nowait(None)

        def release(chunk: list[tuple[Outcome, asyncio.Future[None]]]) -> None:
            for _, fut in chunk:
                if not fut.done():
                    fut.set_result(None)

        heartbeat_s = self.cfg.claim_timeout_s / 3
        pg = not self.db.is_sqlite

        async def database_loop() -> None:
            next_beat = loop.time() + heartbeat_s
            next_live = loop.time() + LIVENESS_S
            try:
                while True:
                    if self._stopping:
                        end_queue()
                    t = loop.time()
                    if t >= next_beat:
                        # Keep our claims fresh: only a dead sender's rows may be handed back.
                        await touch_claims(self.db, self.worker, self._now(now))
                        next_beat = t + heartbeat_s
                    if pg and t >= next_live:
                        next_live = t + LIVENESS_S
                        self._last_live = t
                        if not await self.lease.alive():
                            # Others may already be taking our rows: send nothing more of this pass.
                            state["broken"] = True
                            self._pass_failed = True
                            end_queue()
                        else:
                            n = await reclaim_orphans(self.db, self.lease, self.cfg.max_attempts)
                            if n:
                                log.warning("handed back %d pushes of a sender that stopped", n)
                                report.reclaimed += n
                    if failures:
                        raise failures[0]
                    want = batch - queue.qsize() if not state["sentinels"] and queue.qsize() <= low else 0
                    if results and not want and pg and len(rounds) < RESULT_ROUNDS:
                        # PostgreSQL: commit this group on another connection while earlier ones are
                        # still flushing (their WAL flushes overlap), instead of queueing behind them.
                        chunk = results[:]
                        results.clear()
                        task = asyncio.create_task(record_round(chunk))
                        rounds.add(task)
                        task.add_done_callback(round_done)
                        continue
                    if (results and not rounds) or want:
                        chunk = results[:]
                        results.clear()
                        try:
                            rows, users = await self._sync([o for o, _ in chunk], want, now, report)
                        finally:
                            release(chunk)
                        for row in rows:
                            queue.put_nowait((row, users.get(row.openid) or UserState(row.openid)))
                        if want and len(rows) < want:
                            end_queue()  # nothing more is due; rows queued later wake the next pass
                        continue  # results that came in during the commit go into the next one at once
                    if state["workers_done"] and not rounds and not results:
                        return
                    wake.clear()
                    left = min(next_beat, next_live if pg else next_beat) - loop.time()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), max(left, 0))
            except BaseException:
                state["broken"] = True  # workers stop sending: no result could be recorded now
                self._pass_failed = True
                raise
            finally:
                release(results)
                end_queue()  # never leave workers waiting (e.g. the database went away)
                if rounds:
                    await asyncio.gather(*rounds, return_exceptions=True)

        rounds: set[asyncio.Task[None]] = set()
        failures: list[BaseException] = []

        async def record_round(chunk: list[tuple[Outcome, asyncio.Future[None]]]) -> None:
            try:
                await self._sync([o for o, _ in chunk], 0, now, report)
            except BaseException as e:
                state["broken"] = True
                self._pass_failed = True
                failures.append(e)
            finally:
                release(chunk)

        def round_done(task: asyncio.Task[None]) -> None:
            rounds.discard(task)
            wake.set()

        async def worker() -> None:
            while (item := await queue.get()) is not None:
                if state["broken"]:
                    continue  # left claimed; the next pass (or another sender) hands it back
                fut: asyncio.Future[None] = loop.create_future()
                results.append((await self._guarded(item[0], item[1], now), fut))
                wake.set()
                await fut  # the result is on disk before this worker sends anything else

        db_task = asyncio.create_task(database_loop())
        workers = [asyncio.create_task(worker()) for _ in range(n_workers)]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for t in (db_task, *workers):
                t.cancel()
            raise
        finally:
            state["workers_done"] = True
            wake.set()
            await db_task  # the last results; re-raises a database failure
        return report

    async def _sync(self, outcomes: list[Outcome], want: int, now: datetime | None,
                    report: DeliveryReport) -> tuple[list[ClaimedRow], dict[str, UserState]]:
        """Commit results and claim more rows in one transaction; database hiccups are retried.

        If the database stays away the results are dropped (their rows stay claimed and go out
        again after the claim timeout) and the error is raised to end this pass.
        """
        for attempt in range(4):
            try:
                if want <= 0 and outcomes and self._writer is not None:
                    rows, users = [], {}
                    await self._writer.write(self.worker, outcomes)
                else:
                    rows, users, _ = await record_and_claim(self.db, self.worker, outcomes, self._now(now), want)
                break
            except Exception as e:
                if attempt == 3:
                    log.error("could not record %d delivery results (%s); their rows go out again after the "
                              "claim timeout", len(outcomes), type(e).__name__)
                    raise
                await asyncio.sleep(0.2 * 2 ** attempt)
        report.claimed += len(rows)
        for o in outcomes:
            report.add(o)
            self.totals.add(o)
        return rows, users

    async def _guarded(self, row: ClaimedRow, user: UserState, now: datetime | None) -> Outcome:
        try:
            return await self.deliver_one(row, user, now)
        except Exception as e:  # a bug must not stop the loop nor lose the row
            log.exception("delivering push %d failed unexpectedly", row.id)
            return self._retry_outcome(row, self._now(now), list(row.skipped_channels),
                                       _Retry(f"internal error: {type(e).__name__}: {e}"))

    # -- policy ---------------------------------------------------------------------------------
    def _kefu_window_open(self, user: UserState, now: datetime) -> bool:
        c = self.cfg
        sent = user.kefu_sent or 0
        if user.last_message_at is not None and now - user.last_message_at <= timedelta(hours=c.kefu_window_h) \
                and sent < c.kefu_quota_after_message:
            return True
        return (user.last_event_at is not None and now - user.last_event_at <= timedelta(seconds=c.kefu_event_window_s)
                and sent < c.kefu_quota_after_event)

    async def _eligible(self, channel: str, row: ClaimedRow, user: UserState, now: datetime) -> bool:
        if channel == KEFU:
            if not row.payload.get("text") or not user.known or not self._kefu_window_open(user, now):
                return False
            c = self.cfg
            return await reserve_kefu(self.db, row.openid, now, window_h=c.kefu_window_h,
                                      quota_after_message=c.kefu_quota_after_message,
                                      event_window_s=c.kefu_event_window_s,
                                      quota_after_event=c.kefu_quota_after_event)
        if channel == SUBSCRIBE:
            sub = self.templates.subscribe_spec(row.purpose)
            kind = (await self._consenting(sub.template_id, now)).get(row.openid) if sub is not None else None
            if kind is None or sub is None:
                return False
            if kind == consent.LONG_TERM:
                return True  # nothing to spend; a withdrawn consent comes back as 43101 and is recorded
            # A one-time consent is spent like a kefu slot: atomically, before sending.
            return await consent.reserve(self.db, row.openid, sub.template_id, now)
        if channel == TEMPLATE:
            return self.templates.has(row.purpose) and template_allowed(row.purpose, row.payload)
        return bool(self.sms is not None and self.sms.enabled and _sms_phone(row, user) and row.payload.get("text"))

    async def _consenting(self, template_id: str, now: datetime) -> dict[str, str]:
        """Who may get a 订阅通知 on ``template_id`` now, read at most every :data:`CONSENT_CACHE_S`: a
        call-up to 1,170 members then costs one query, not 1,170 reservation UPDATEs for people who never
        consented. A consent given since falls to the next channel for that moment; a consent withdrawn
        since is caught by the atomic reservation."""
        loop_now = asyncio.get_running_loop().time()
        hit = self._consent_cache.get(template_id)
        if hit is not None and loop_now - hit[0] < CONSENT_CACHE_S:
            return hit[1]
        async with self.db.session() as s:
            people = await consent.consenting(s, template_id)
        self._consent_cache[template_id] = (loop_now, people)
        return people

    async def deliver_one(self, row: ClaimedRow, user: UserState, now: datetime | None = None) -> Outcome:
        """Decide the channel for one claimed row and try it, falling through to the next channel when
        WeChat refuses this one for this person (45015/45047 kefu window, 43101 no 订阅通知 consent) or
        for its data (47003, 40037: a configuration problem, logged)."""
        t = self._now(now)
        skipped = list(row.skipped_channels)
        if user.known and not user.subscribed:
            return Outcome(row.id, "cancelled", row.attempts, row.due_at, skipped_channels=skipped,
                           last_error="user unsubscribed")
        notes: list[str] = []
        # A push addressed to a phone (a verification code) goes by SMS to that phone or not at all.
        for channel in (SMS,) if row.payload.get("sms_to") else CHANNELS:
            if channel in skipped or not await self._eligible(channel, row, user, t):
                continue
            try:
                msgid = await self._send(channel, row, user, t)
            except _Retry as r:
                if channel == SUBSCRIBE:
                    await self._release_consent(row)
                return self._retry_outcome(row, t, skipped, r)
            except _Fail as f:
                self._log_failed(row, f.reason)
                return Outcome(row.id, "failed", row.attempts + 1, row.due_at, channel=channel,
                               skipped_channels=skipped, last_error=f.reason)
            except _Skip as e:
                skipped.append(channel)
                notes.append(e.reason)
                continue
            return Outcome(row.id, "sent", row.attempts + 1, row.due_at, channel=channel, skipped_channels=skipped,
                           sent_at=self._now(now), wechat_msgid=msgid)
        why = "no channel"
        if notes:
            why += f" ({'; '.join(notes)})"
        elif row.payload.get("sms_to"):
            why += " (SMS only, and no sms.webhook_url is set)"
        elif not self.templates.has(row.purpose):
            why += f" (no template for {row.purpose}, no 订阅通知 consent, no kefu window, no phone for SMS)"
        elif not template_allowed(row.purpose, row.payload):
            why += (f" (a template message is not allowed for {row.purpose}: nobody asked for it; no 订阅通知 "
                    "consent, no kefu window, no phone for SMS)")
        self._log_failed(row, why)
        return Outcome(row.id, "failed", row.attempts + (1 if notes else 0), row.due_at,
                       skipped_channels=skipped, last_error=why)

    def _retry_outcome(self, row: ClaimedRow, now: datetime, skipped: list[str], r: _Retry) -> Outcome:
        attempts = row.attempts + (1 if r.counts else 0)
        if r.counts and attempts >= self.cfg.max_attempts:
            why = f"gave up after {attempts} attempts: {r.reason}"
            self._log_failed(row, why)
            return Outcome(row.id, "failed", attempts, row.due_at, skipped_channels=skipped, last_error=why)
        delay = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * 2 ** max(attempts - 1, 0))
        delay = self.rng.uniform(delay / 2, delay)  # "equal jitter": spread retries, keep a floor
        due = now + timedelta(seconds=delay)
        if r.not_before is not None and r.not_before > due:
            due = r.not_before
        return Outcome(row.id, "pending", attempts, due, skipped_channels=skipped, last_error=r.reason)

    def _log_failed(self, row: ClaimedRow, reason: str) -> None:
        """Every push that ends ``failed`` is logged once, with its reason and never its text."""
        hint = ""
        if "40003" in reason:
            hint = (" — WeChat does not know this openid for this account (the fake WeChat API takes ids of "
                    "16-64 letters, digits, _ or -; `vetbot serve --with-fake-wechat` also takes the demo's "
                    "short ids)")
        log.warning("push %d (%s) to %s failed: %s%s", row.id, row.purpose, _mask(row.openid), reason, hint)

    async def _release_consent(self, row: ClaimedRow) -> None:
        sub = self.templates.subscribe_spec(row.purpose)
        cached = self._consent_cache.get(sub.template_id) if sub is not None else None
        if sub is not None and (cached is None or cached[1].get(row.openid) != consent.LONG_TERM):
            try:
                await consent.release(self.db, row.openid, sub.template_id)
            except Exception as e:  # the retry will simply find one notice less
                log.warning("could not give back a 订阅通知 consent: %s", type(e).__name__)

    def _full_text_link(self, row: ClaimedRow) -> str | None:
        """A signed link to the push's whole text (/msg/…), for pushes without a page of their own. It names
        the push, not the person: the page shows the text only to the person WeChat OAuth names."""
        if not row.payload.get("text"):
            return None
        return sign_link(self.config, "/msg/{token}", FULL_TEXT_LINK_TTL_S, k="msg", o=row.id)

    # -- channels -------------------------------------------------------------------------------
    async def _send(self, channel: str, row: ClaimedRow, user: UserState, now: datetime) -> int | None:
        path = CHANNEL_PATH[channel]
        paused = self._paused.get(path)
        if paused is not None:
            if paused[0] > now:
                raise _Retry(f"{paused[1]} (API paused until {paused[0]:%Y-%m-%d %H:%M} UTC)",
                             not_before=paused[0], counts=False)
            self._paused.pop(path, None)
        await self.limiter.acquire(path)
        try:
            if channel == KEFU:
                await self.client.send_custom_text(row.openid, _kefu_text(row.payload))
                return None
            if channel == SUBSCRIBE:
                r = self.templates.render_subscribe(row.purpose, row.payload, row.created_at)
                # No page of its own (a late reply): link the whole text, which the fields cannot hold.
                result = await self.client.send_subscribe(row.openid, r.template_id, r.data,
                                                          r.url or self._full_text_link(row))
                msgid = result.get("msgid")
                return int(msgid) if isinstance(msgid, int) else None
            if channel == TEMPLATE:
                r = self.templates.render(row.purpose, row.payload, row.created_at)
                return await self.client.send_template(row.openid, r.template_id, r.data,
                                                       r.url or self._full_text_link(row))
            phone = _sms_phone(row, user)
            assert self.sms is not None and phone
            await self.sms.send(phone, _sms_text(row.payload), key=row.idempotency_key,
                                extra={**TemplateRenderer.values(row.payload, row.purpose, row.created_at,
                                                                 self.templates.tz), "purpose": row.purpose})
            return None
        except (OutOfWindow, OverQuota) as e:
            raise _Skip(_reason(channel, e)) from None
        except NoConsent as e:
            sub = self.templates.subscribe_spec(row.purpose)
            if sub is not None:  # our record said yes, WeChat says no: believe WeChat from now on
                await consent.refused(self.db, row.openid, sub.template_id, now)
                cached = self._consent_cache.get(sub.template_id)
                if cached is not None:
                    cached[1].pop(row.openid, None)
            raise _Skip(_reason(channel, e)) from None
        except (InvalidArgument, InvalidTemplate) as e:
            # The configuration, not the person: say so loudly (once), and still reach the person.
            key = (row.purpose, f"{channel}:{e.errcode}")
            if key not in self._config_errors:
                self._config_errors.add(key)
                log.error("templates.%s: WeChat refused the %s: %s (fix templates.%s in the config; "
                          "`vetbot templates preview %s` shows what is sent)", row.purpose, channel,
                          _reason(channel, e), row.purpose, row.purpose)
            raise _Skip(_reason(channel, e)) from None
        except RateLimited as e:
            until = now + timedelta(seconds=max(e.retry_after, 1.0))
            self._paused[path] = (until, _reason(channel, e))
            log.warning("%s: WeChat quota reached (%s); pausing this API until %s UTC", path, e.errcode, until)
            raise _Retry(_reason(channel, e), not_before=until) from None
        except WeChatError as e:
            if e.transient:
                raise _Retry(_reason(channel, e)) from None
            if _account_level(e):
                log.error("WeChat refused the account, not the message: %s (pushes are retried; fix the "
                          "configuration or the IP whitelist)", _reason(channel, e))
                raise _Retry(_reason(channel, e)) from None
            raise _Fail(_reason(channel, e)) from None
        except SmsError as e:
            if e.transient:
                raise _Retry(_reason(channel, e)) from None
            raise _Fail(_reason(channel, e)) from None


def template_allowed(purpose: str, payload: Mapping[str, Any]) -> bool:
    """Whether WeChat's rules let a push of ``purpose`` go out as a template message (see TEMPLATE_BASIS)."""
    data = payload.get("data")
    basis = data.get("template_basis") if isinstance(data, Mapping) else None
    return (basis or TEMPLATE_BASIS.get(purpose, UNREQUESTED)) in (WARNING, REQUESTED)


def _mask(openid: str) -> str:
    """Enough of an openid to find the row, not enough to be one (logs are read by more people)."""
    return openid[:6] + "…" if len(openid) > 8 else "…"


def _sms_phone(row: ClaimedRow, user: UserState) -> str | None:
    """The phone an SMS goes to: the push's own (``sms_to``) or the user's."""
    return str(row.payload.get("sms_to") or "") or user.phone


def _kefu_text(payload: Mapping[str, Any]) -> str:
    text = str(payload.get("text") or "")
    url = payload.get("url")
    if url and url not in text:
        # Customer-service text may carry links; the page is what a template would have opened.
        text += f'\n<a href="{url}">点击查看</a>'
    return text


def _sms_text(payload: Mapping[str, Any]) -> str:
    text = str(payload.get("text") or "")
    url = payload.get("url")
    return f"{text} {url}" if url and url not in text else text


# ---------------------------------------------------------------------------------------------------
# Assembly


def build_client(config: Config, db: Database, **kwargs: Any) -> WeChatClient:
    """The WeChat API client of this process, sharing its token through the database."""
    store = DbTokenStore(db, config.wechat.appid)
    return WeChatClient(config.wechat.api_base, config.wechat.appid, config.wechat.secret, store,
                        timeout=config.wechat.timeout_s, **kwargs)


def build_sender(config: Config, db: Database, clock: Any, *, worker: str | None = None) -> OutboxSender:
    """A sender wired to the configured WeChat API (token in the database) and SMS webhook."""
    return OutboxSender(db, config, clock, build_client(config, db), SmsClient(config.sms), worker=worker)
