"""One user turn: dedup → user row → conversation → commands / choices / flow / intent → save.

Everything a turn does — the dedup record, the user's row, the conversation, domain changes made
by flows, pushes they queue and the late-reply push — is written in ONE transaction. A WeChat
retry of the same message finds the dedup row and gets the stored reply; a turn that fails rolls
back completely, so the retry runs it afresh: a turn never runs twice and never half-runs.

Turns of one user run one at a time: on PostgreSQL an asyncio lock per openid in this process
and a row lock on the user's conversation across processes (taken by the upsert that loads it,
:class:`storage.turnio.PgTurnIO`); on SQLite
all turns go through :class:`storage.turnbatch.TurnBatcher`, one after another on the single
connection, committed in groups (see :mod:`storage.turnio` for why the core rows use plain SQL).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update

from bot.clock import Clock
from bot.intents import Intent, IntentMatcher
from flows.api import Context, Inbound, Services, before_route_hooks, event_handlers, get_flow, scenes
from flows.voice import voice_turn
from storage.db import Database
from storage.models import OutboxMessage
from storage.outbox import HIGH, Push, enqueue
from storage.turnbatch import TurnBatcher
from storage.turnio import ConvRecord, PgTurnIO, SqliteTurnIO

log = logging.getLogger(__name__)

#: Commands handled by the dispatcher itself (intents may point their ``flow`` at them).
BUILTIN_COMMANDS = frozenset({"cancel", "back"})
#: Passive text replies are cut to this many UTF-8 bytes (WeChat's limit is 2048).
MAX_REPLY_BYTES = 2000
#: Kept (for WeChat's retries) instead of a reply that carried a one-time secret (``ctx.secret_reply``).
SECRET_REPLAY = "这条回复含一次性链接，为安全起见不再重发。如仍需要，请重新发送刚才的消息。"
EVENT_WINDOW = frozenset({"subscribe", "click", "scan", "view", "scancode_push", "scancode_waitmsg",
                          "pic_sysphoto", "pic_photo_or_album", "pic_weixin", "location_select"})


@dataclass
class TurnControl:
    """Shared between the gateway (which owns the deadline) and the running turn.

    The gateway sets ``late`` when the budget runs out before the turn has ``decided``; a late turn
    queues its reply as a customer-service push instead of returning it.
    """

    late: bool = False
    decided: bool = False


def _fit(text: str) -> str:
    data = text.encode("utf-8")
    if len(data) <= MAX_REPLY_BYTES:
        return text
    cut = data[: MAX_REPLY_BYTES - 3].decode("utf-8", errors="ignore")
    return cut + "…"


class Dispatcher:
    """Runs turns. Stateless apart from the per-user locks; safe to share across requests."""

    def __init__(self, db: Database, services: Services, matcher: IntentMatcher, clock: Clock) -> None:
        self.db, self.services, self.matcher, self.clock = db, services, matcher, clock
        self.cfg = services.config
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._batcher: TurnBatcher | None = db.batcher if db.is_sqlite else None

    def _lock(self, openid: str) -> asyncio.Lock:
        lock = self._locks.get(openid)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[openid] = lock
        return lock

    def start(self, openid: str, inbound: Inbound, dedup_key: str,
              control: TurnControl | None = None) -> asyncio.Future[str | None]:
        """Start (or replay) one turn; the future resolves with the passive reply text (None for
        ``success``) once the turn is committed. It runs to the end even if nobody waits for it.

        On SQLite the turn joins the group-commit queue and runs in its worker (no task of its own:
        a task and the shield around it cost ~15 µs of a ~380 µs turn); elsewhere it is a task."""
        control = control or TurnControl()
        voice = self.services.extra.get("voice")
        if voice is not None and inbound.kind == "voice" and not inbound.extra.get("voice"):
            # Our speech recogniser runs before the turn, outside its transaction and lock, then starts
            # the turn with the text; past the reply budget the reply goes out later (bot/voice.py).
            return voice.start(self, openid, inbound, dedup_key, control)
        if self.db.is_sqlite:
            async def turn(conn: Any, raw: Any) -> str | None:
                io = SqliteTurnIO(conn, raw)
                try:
                    return await self.run_turn(io, openid, inbound, dedup_key, control)
                finally:
                    await io.finish()

            assert self._batcher is not None
            return self._batcher.enqueue(turn)
        return asyncio.ensure_future(self._locked_turn(openid, inbound, dedup_key, control))

    async def handle(self, openid: str, inbound: Inbound, dedup_key: str,
                     control: TurnControl | None = None) -> str | None:
        """Run (or replay) one turn; returns the passive reply text, or None for ``success``."""
        return await asyncio.shield(self.start(openid, inbound, dedup_key, control))

    async def _locked_turn(self, openid: str, inbound: Inbound, dedup_key: str, control: TurnControl) -> str | None:
        async with self._lock(openid), self.db.session() as session:
            return await self.run_turn(PgTurnIO(session), openid, inbound, dedup_key, control)

    async def close(self) -> None:
        """Nothing of its own to release: the SQLite turn queue belongs to the database (shared with the
        answer and tribute pages) and stops in :meth:`storage.db.Database.close`."""

    # ------------------------------------------------------------------------------------------
    async def run_turn(self, io: Any, openid: str, inbound: Inbound, dedup_key: str,
                       control: TurnControl) -> str | None:
        now = self.clock.now()
        replay, prior_reply, user, conv = await io.load(openid, dedup_key, now, inbound.event == "subscribe")
        if replay:
            control.decided = True
            return None if control.late else prior_reply
        self._touch(user, inbound, now)
        ctx = Context(user=user, inbound=inbound, session=io.session, services=self.services, now=now,
                      flow=conv.flow, step=conv.step, slots=dict(conv.slots or {}),
                      stack=list(conv.stack or []), reasks=conv.reasks)
        await self._route(ctx, conv)
        self._save_conversation(ctx, conv, now)
        reply = _fit("\n\n".join(ctx.replies)) if ctx.replies else None
        # Deadline handshake: from here on the gateway waits for us instead of answering `success`.
        control.decided = True
        stored = reply if not ctx.secret_reply else SECRET_REPLAY
        if control.late and reply:
            await enqueue(io.session, Push(openid=openid, purpose="late_reply", key=f"late:{dedup_key}",
                                           text=reply, priority=HIGH), now)
            stored = None
        await io.save(user, conv, dedup_key, stored, now, timedelta(hours=self.cfg.bot.dedup_ttl_h))
        for after in ctx.after_save:  # 注销: erase after the turn's own rows are written (same transaction)
            await after(io.session)
        return None if control.late else reply

    def _touch(self, user: Any, inbound: Inbound, now: datetime) -> None:
        if user.openid in self.cfg.bot.staff_openids and not user.has_role("staff"):
            user.add_role("staff")
        user.last_seen = now
        if inbound.kind != "event":
            user.last_message_at = now
            user.kefu_sent = 0
            user.subscribed = True
        elif inbound.event in EVENT_WINDOW:
            user.last_event_at = now
            user.kefu_sent = 0

    # ------------------------------------------------------------------------------------------
    async def _route(self, ctx: Context, conv: ConvRecord) -> None:
        inbound = ctx.inbound
        if inbound.kind == "event":
            await self._event(ctx, conv)
            return
        if inbound.kind == "location":
            # Not stored (个人信息保护法: 行踪轨迹 is sensitive and nothing here needs it).
            ctx.say("已收到您的位置（本服务号不保存位置信息）。回复“帮助”查看可以办理的事项。")
            return
        if (inbound.kind == "voice" or inbound.extra.get("voice")) and await voice_turn(ctx):
            return  # voice: counted; without text, a kind hint at most once a day (flows/voice.py)
        if inbound.kind != "text" or not ctx.text:
            ctx.say("目前只能看懂文字消息哦。请直接打字提问，或回复“帮助”查看功能。")
            return
        timeout = timedelta(minutes=self.cfg.bot.conversation_timeout_min)
        if (conv.flow or conv.choices) and (conv.expired or ctx.now - conv.updated_at > timeout):
            # A flow or a numbered menu left idle ends. A stale "2" must not pick from yesterday's options:
            # it gets the note; other text after an old menu (帮助, the welcome) is simply read afresh.
            if conv.flow or ctx.choice(len(conv.choices)) is not None:
                ctx.say("上次的对话已超时结束，我们重新开始。")
            self._clear(ctx)
            conv.choices, conv.choice_kind = [], None
        elif conv.expired:
            conv.expired = False
        roles = ctx.user.role_set
        cmd = self.matcher.global_command(ctx.text)
        if cmd is not None and cmd.allowed(roles):
            await self._command(ctx, conv, cmd)
            return
        # before_route hooks (flows.api) read the message before the open menu and the active flow: an open
        # call-up's 1/2/3 must not pick item 1 of a menu left open (issue 14, item 13). A hook that claims
        # the message replies itself; when it asks nothing of its own, the open menu stays open for the next message.
        ctx.asked_at = conv.updated_at if (conv.flow or conv.choices) else None
        for hook in before_route_hooks():
            if await hook(ctx):
                if ctx.flow == conv.flow and not ctx.choices:
                    ctx.choices, ctx.choice_kind = list(conv.choices), conv.choice_kind
                return
        if conv.choices:
            n = ctx.choice(len(conv.choices))
            if n is not None:
                value = conv.choices[n - 1]["value"]
                kind = conv.choice_kind
                if kind == "intent":
                    conv.choices, conv.choice_kind = [], None
                    ctx.entry = "choice"
                    await self._start_intent_id(ctx, str(value))
                    return
                ctx.picked = value
                conv.choices, conv.choice_kind = [], None
                await self._flow_step(ctx)
                return
            if conv.choice_kind == "intent":
                conv.choices, conv.choice_kind = [], None
        if ctx.flow:
            await self._flow_step(ctx)
            return
        await self._match_and_start(ctx)

    async def _match_and_start(self, ctx: Context) -> None:
        m = self.matcher.match(ctx.text, ctx.user.role_set)
        if m.intent is not None:
            await self._start_intent(ctx, m.intent, m.slots)
            return
        if m.suggestions:
            ctx.choose([(i.help or i.id, i.id) for i in m.suggestions], header="您是想：",
                       footer="回复数字选择；都不是请直接换个说法。", kind="intent")
            return
        ctx.entry = "fallback"
        await self._start_flow(ctx, self.cfg.bot.fallback_flow, {})

    async def _start_intent_id(self, ctx: Context, intent_id: str) -> None:
        intent = self.matcher.by_id.get(intent_id)
        if intent is None:
            ctx.say("这个选项已经不可用了，请回复“帮助”重新选择。")
            return
        await self._start_intent(ctx, intent, {})

    async def _start_intent(self, ctx: Context, intent: Intent, slots: dict[str, str]) -> None:
        if not intent.allowed(ctx.user.role_set):
            ctx.say("该功能仅限工作人员使用。回复“帮助”查看您可以使用的功能。")
            return
        if intent.flow in BUILTIN_COMMANDS:
            await self._command(ctx, None, intent)
            return
        await self._start_flow(ctx, intent.flow, slots)

    async def _start_flow(self, ctx: Context, name: str, slots: dict[str, str]) -> None:
        for _ in range(5):  # a flow may switch to another in the same turn; bounded
            flow = get_flow(name)
            if flow.roles and not (flow.roles & ctx.user.role_set):
                ctx.say("该功能仅限工作人员使用。回复“帮助”查看您可以使用的功能。")
                self._clear(ctx)
                return
            ctx.flow, ctx.step, ctx.slots, ctx.intent_slots = name, None, {}, slots
            ctx.ended, ctx.next_flow, ctx.choices, ctx.choice_kind = False, None, [], None
            ctx.stack, ctx.reasks, ctx._turn_step = [], 0, None
            await flow.start(ctx)
            if ctx.next_flow is None:
                return
            name, slots = ctx.next_flow
            ctx.entry = "switch"

    async def _flow_step(self, ctx: Context) -> None:
        assert ctx.flow is not None
        flow = get_flow(ctx.flow)
        await flow.step(ctx)
        if ctx.rerouted:
            self._clear(ctx)
            ctx.rerouted = False
            await self._match_and_start(ctx)
            return
        if ctx.next_flow is not None:
            name, slots = ctx.next_flow
            ctx.entry = "switch"
            await self._start_flow(ctx, name, slots)

    async def _command(self, ctx: Context, conv: ConvRecord | None, intent: Intent) -> None:
        if intent.flow == "cancel":
            if ctx.flow:
                title = get_flow(ctx.flow).title or "当前事项"
                ctx.say(f"已退出“{title}”。回复“帮助”查看功能。")
            else:
                ctx.say("当前没有进行中的事项。回复“帮助”查看功能。")
            self._clear(ctx)
            return
        if intent.flow == "back":
            stack = list(conv.stack) if conv is not None else []
            if not ctx.flow:
                ctx.say("当前没有进行中的事项。回复“帮助”查看功能。")
                return
            flow = get_flow(ctx.flow)
            if not stack:
                ctx.say("已经是第一步了。")
                ctx.step, ctx.slots, ctx._turn_step = None, {}, None
                ctx.entry = "back"  # the flow starts over; the text (返回) is not a request
                await flow.start(ctx)
                return
            prev = stack.pop()
            ctx.step, ctx.slots, ctx.stack = prev["step"], dict(prev["slots"]), stack
            ctx._turn_step = None  # re-prompting must not push the step we just left
            await flow.prompt(ctx, ctx.step)
            return
        self._clear(ctx)
        await self._start_flow(ctx, intent.flow, {})

    def _clear(self, ctx: Context) -> None:
        ctx.flow, ctx.step, ctx.slots, ctx.stack = None, None, {}, []
        ctx.choices, ctx.choice_kind = [], None
        ctx.ended, ctx._turn_step = False, None

    # ------------------------------------------------------------------------------------------
    async def _event(self, ctx: Context, conv: ConvRecord) -> None:
        ev = (ctx.inbound.event or "").lower()
        key = ctx.inbound.event_key or ""
        user = ctx.user
        if ev == "subscribe":
            user.subscribed, user.subscribed_at, user.unsubscribed_at = True, ctx.now, None
            ctx.say(self.cfg.bot.welcome)
            if key.startswith("qrscene_"):
                await self._scene(ctx, key[len("qrscene_"):])
            if not ctx.choices:
                items = self.matcher.menu_intents(user.role_set)
                ctx.choose([(i.help or i.id, i.id) for i in items], header="回复数字即可办理：", kind="intent")
            return
        if ev == "unsubscribe":
            user.subscribed, user.unsubscribed_at = False, ctx.now
            await ctx.session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.openid == user.openid, OutboxMessage.status == "pending")
                .values(status="cancelled", last_error="user unsubscribed")
            )
            self._clear(ctx)
            return
        if ev == "scan":
            await self._scene(ctx, key)
            return
        if ev == "location":
            return  # periodic location reports are not stored (sensitive; no feature uses them)
        if ev == "click":
            intent = self.matcher.by_menu_key(key)
            if intent is None:
                log.warning("menu key %r has no intent", key)
                ctx.say("该菜单暂未开通，回复“帮助”查看功能。")
                return
            self._clear(ctx)
            ctx.entry = "menu"
            await self._start_intent(ctx, intent, {})
            return
        if ev == "templatesendjobfinish":
            msgid = ctx.inbound.extra.get("msg_id")  # an int, or None when WeChat's MsgID is not a number
            status = ctx.inbound.extra.get("status")
            if isinstance(msgid, int):
                await ctx.session.execute(
                    update(OutboxMessage).where(OutboxMessage.wechat_msgid == msgid)
                    .values(delivery_status=str(status)[:64] if status else None)
                )
            return
        handler = event_handlers().get(ev)
        if handler is not None:  # events a feature registered with flows.api.on_event (订阅通知 choices …)
            await handler(ctx)
            return
        # VIEW, MASSSENDJOBFINISH and everything else: nothing to say.

    async def _scene(self, ctx: Context, scene: str) -> None:
        ctx.user.qr_scene = scene[:64]
        for prefix, handler in scenes().items():
            if scene.startswith(prefix):
                await handler(ctx, scene[len(prefix):])
                return

    # ------------------------------------------------------------------------------------------
    def _save_conversation(self, ctx: Context, conv: ConvRecord, now: datetime) -> None:
        if ctx.ended:
            ctx.flow, ctx.step, ctx.slots, ctx.stack = None, None, {}, []
        if (ctx.inbound.kind == "event" and not ctx.replies and ctx.flow == conv.flow and ctx.step == conv.step
                and ctx.slots == conv.slots and ctx.stack == conv.stack):
            # An event WeChat sends on its own (LOCATION reports, TEMPLATESENDJOBFINISH, VIEW …) is not the
            # user taking part: the conversation keeps its idle clock and its numbered options.
            return
        conv.flow, conv.step, conv.slots, conv.stack = ctx.flow, ctx.step, ctx.slots, list(ctx.stack)
        # Numbered options are valid for the next message only.
        conv.choices, conv.choice_kind = ctx.choices, ctx.choice_kind
        conv.reasks = ctx.reasks if ctx.flow else 0
        conv.updated_at = now
        conv.expired = False
