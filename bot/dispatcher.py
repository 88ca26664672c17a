"""One user turn: dedup → user row → conversation → commands / choices / flow / intent → save.

Everything a turn does — the dedup record, the user's row, the conversation, domain changes made
by flows, pushes they queue and the late-reply push — is written in ONE transaction. A WeChat
retry of the same message finds the dedup row and gets the stored reply; a turn that fails rolls
back completely, so the retry runs it afresh: a turn never runs twice and never half-runs.

How a turn's transaction runs is the :class:`storage.turnio.TurnStore`'s business: one user's turns
run one at a time (row locks on PostgreSQL, group commit on SQLite), the dispatcher only says what a
turn does. Where the user is in a conversation is one value, :class:`storage.conversations.FlowState`:
loaded with the turn, worked on by the flow through ``ctx.state``, saved with the turn.

Routing a text message (:meth:`Dispatcher._route`), in this order:

0. features' ``takeover`` hooks see every message first (an open 人工 ticket forwards it to staff);
1. an idle flow or numbered menu past ``bot.conversation_timeout_min`` ends;
2. global commands (帮助 / 取消 / 返回 / 人工) work anywhere; then features' ``before_route`` hooks
   (an open call-up reads a member's 1 / 2 / 3 before an older numbered menu does);
3. a digit answers the numbered options of the previous reply;
4. the active flow takes its next step (its ``roles`` checked again first);
5. otherwise the intent matcher starts a flow (or offers "您是想…", or the fallback flow).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import update

from bot.clock import Clock
from bot.intents import Intent, IntentMatcher
from bot.understanding import COMMAND_FLOWS, SMALLTALK_FLOW, Understanding, Understood
from flows.api import (
    Context,
    Flow,
    Inbound,
    Services,
    before_route_hooks,
    event_handlers,
    get_flow,
    scenes,
    takeover_hooks,
)
from flows.voice import voice_turn
from storage.conversations import Option
from storage.db import Database
from storage.models import OutboxMessage
from storage.outbox import HIGH, Push, enqueue
from storage.turnio import ConvRecord, Replayed, TurnIO, TurnStore, UserRecord, turn_store

if TYPE_CHECKING:
    from bot.voice import VoicePipeline

log = logging.getLogger(__name__)
#: A bare number (a menu pick typed when no menu is open), ASCII or full-width digits.
_BARE_NUMBER = re.compile(r"[0-9０-９]{1,4}")
#: A message with words in it (not only digits, spaces and phone punctuation).
_WORDS = re.compile(r"[^\d\s+\-()（）.,，。]")

#: Commands handled by the dispatcher itself (intents may point their ``flow`` at them).
BUILTIN_COMMANDS = COMMAND_FLOWS
#: Confidence of the understanding layer at which a message that is not an answer to the flow's step
#: leaves the flow for the intent it names (bot/understanding.py calibrates confidences on the catalogue).
LET_GO_AT = 0.6
#: What a user hears when a flow or intent needs a role they do not have.
STAFF_ONLY = "该功能仅限工作人员使用。回复“帮助”查看您可以使用的功能。"
#: Kept (for WeChat's retries) instead of a reply that carried a one-time secret (``ctx.secret_reply``).
SECRET_REPLAY = "这条回复含一次性链接，为安全起见不再重发。如仍需要，请重新发送刚才的消息。"
#: Passive text replies are cut to this many UTF-8 bytes (WeChat's limit is 2048).
MAX_REPLY_BYTES = 2000
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
    """Runs turns. Stateless: the turn store orders and stores them; safe to share across requests."""

    def __init__(self, db: Database, services: Services, matcher: IntentMatcher, clock: Clock,
                 store: TurnStore | None = None) -> None:
        self.db, self.services, self.matcher, self.clock = db, services, matcher, clock
        self.cfg = services.config
        self.store: TurnStore = store if store is not None else turn_store(db)
        #: Our speech recogniser for voice messages WeChat sent without Recognition (set by
        #: :func:`bot.app.build_runtime` when ``speech.webhook_url`` is configured).
        self.voice: VoicePipeline | None = None
        #: The understanding layer (bot/understanding.py), set by the runtime; None: exact and fuzzy
        #: matching only (unit tests of the dispatcher alone).
        self.understanding: Understanding | None = None

    def start(self, openid: str, inbound: Inbound, dedup_key: str,
              control: TurnControl | None = None) -> asyncio.Future[str | None]:
        """Start (or replay) one turn; the future resolves with the passive reply text (None for
        ``success``) once the turn is committed. It runs to the end even if nobody waits for it."""
        control = control or TurnControl()
        voice = self.voice
        if voice is not None and inbound.kind == "voice" and not inbound.extra.get("voice"):
            # Our speech recogniser runs before the turn, outside its transaction and lock, then starts
            # the turn with the text; past the reply budget the reply goes out later (bot/voice.py).
            return voice.start(self, openid, inbound, dedup_key, control)
        prefetch = self.services.qa_prefetch if inbound.kind == "text" else None
        early = prefetch(inbound.text) if prefetch is not None else None
        if early is not None:
            # Policy Q&A matches the text before the turn, outside the turn queue (flows/policy_qa/flow.py).
            return asyncio.ensure_future(self._after(early, openid, inbound, dedup_key, control))
        return self.store.run(openid, lambda io: self.run_turn(io, openid, inbound, dedup_key, control))

    async def _after(self, early: asyncio.Future[object], openid: str, inbound: Inbound, dedup_key: str,
                     control: TurnControl) -> str | None:
        try:
            await asyncio.shield(early)
        except Exception:
            pass  # the turn asks again and handles its own error
        return await self.store.run(openid, lambda io: self.run_turn(io, openid, inbound, dedup_key, control))

    async def handle(self, openid: str, inbound: Inbound, dedup_key: str,
                     control: TurnControl | None = None) -> str | None:
        """Run (or replay) one turn; returns the passive reply text, or None for ``success``."""
        return await asyncio.shield(self.start(openid, inbound, dedup_key, control))

    async def close(self) -> None:
        """Nothing of its own to release: the SQLite turn queue belongs to the database (shared with the
        answer and tribute pages) and stops in :meth:`storage.db.Database.close`."""

    # ------------------------------------------------------------------------------------------
    async def run_turn(self, io: TurnIO, openid: str, inbound: Inbound, dedup_key: str,
                       control: TurnControl) -> str | None:
        """One turn inside the store's transaction: load, route, save; returns the passive reply."""
        now = self.clock.now()
        got = await io.load(openid, dedup_key, now, inbound.event == "subscribe")
        if isinstance(got, Replayed):
            control.decided = True
            return None if control.late else got.reply
        user, conv = got.user, got.conv
        self._touch(user, inbound, now)
        ctx = Context(user=user, inbound=inbound, session=io.session, services=self.services, now=now,
                      state=conv.state.for_turn())
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

    def _touch(self, user: UserRecord, inbound: Inbound, now: datetime) -> None:
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
        for claim in takeover_hooks():  # 0. a conversation handed over to staff (人工) takes everything
            if await claim(ctx):
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
        # 1. A flow or numbered menu left idle too long ends; ``offered``: the options this text may pick.
        offered = self._expire_idle(ctx, conv)
        # 2. Global commands (帮助 / 取消 / 返回 / 人工) work anywhere.
        cmd = self.matcher.global_command(ctx.text)
        if cmd is not None and cmd.allowed(ctx.user.role_set):
            await self._command(ctx, cmd)
            return
        # 2b. before_route hooks (flows.api) read the message before the open menu and the active flow:
        # an open call-up's 1/2/3 must not pick item 1 of a menu left open (issue 14, item 13). A hook that
        # claims the message replies itself; when it asks nothing of its own, the open menu stays open.
        ctx.asked_at = conv.updated_at if (ctx.flow or offered) else None
        for hook in before_route_hooks():
            if await hook(ctx):
                if ctx.flow == conv.state.flow and not ctx.choices:
                    ctx.choices, ctx.choice_kind = list(offered), conv.state.choice_kind
                return
        # 3. A digit answering the numbered options of the previous reply.
        if offered and await self._numbered_choice(ctx, offered, conv.state.choice_kind):
            return
        # 4. The active flow's next step (its roles checked again).
        if ctx.flow:
            await self._flow_step(ctx)
            if (offered and not ctx.choices and ctx.flow == conv.state.flow and ctx.step == conv.state.step
                    and ctx.reasks > conv.state.reasks):
                # A re-ask of the same step keeps its numbered options: a digit still answers it.
                ctx.choices, ctx.choice_kind = list(offered), conv.state.choice_kind
            return
        # 5. A new request: an intent, "您是想…" options, or the fallback flow.
        await self._match_and_start(ctx)

    def _expire_idle(self, ctx: Context, conv: ConvRecord) -> list[Option]:
        """End a flow or numbered menu left idle past ``bot.conversation_timeout_min``; returns the
        numbered options the message may answer."""
        offered = conv.state.choices
        timeout = timedelta(minutes=self.cfg.bot.conversation_timeout_min)
        if not conv.state.idle and (conv.expired or ctx.now - conv.updated_at > timeout):
            # A stale "2" must not pick from yesterday's options: it gets the note; other text after an
            # old menu (帮助, the welcome) is simply read afresh.
            if conv.state.flow or ctx.choice(len(offered)) is not None:
                ctx.say("上次的对话已超时结束，我们重新开始。")
            ctx.clear()
            return []
        return offered

    async def _numbered_choice(self, ctx: Context, offered: list[Option], kind: str | None) -> bool:
        """A digit picking one of ``offered``: an intent to start, or a value for the flow's step."""
        n = ctx.choice(len(offered))
        if n is None or (kind != "intent" and not ctx.flow):
            return False  # not a pick (the options lapse; a flow's own re-ask offers them again)
        value = offered[n - 1]["value"]
        if kind == "intent":
            ctx.entry = "choice"
            await self._start_intent_id(ctx, str(value))
            return True
        ctx.picked = value
        await self._flow_step(ctx)
        return True

    async def understand(self, text: str, roles: set[str], *, in_flow: bool = False) -> Understood:
        """The understanding layer's decision (exact rules on the loop, meaning in a worker thread)."""
        und = self.understanding
        if und is None:  # a runtime built without the layer (unit tests of the dispatcher alone)
            m = self.matcher.match(text, roles)
            if m.intent is not None:
                return Understood("route", m.intent, m.score / 100, m.how, slots=m.slots)
            if m.suggestions:
                return Understood("suggest", None, m.score / 100, m.how, suggestions=m.suggestions)
            return Understood("fallback", None, m.score / 100, m.how)
        return await und.decide_async(text, roles, in_flow=in_flow)

    async def _match_and_start(self, ctx: Context, got: Understood | None = None) -> None:
        if (got is None and _BARE_NUMBER.fullmatch(ctx.text.strip())
                and self.matcher.exact(ctx.text, ctx.user.role_set) is None):
            # A number with no options open (they were used, or have lapsed) and no exact rule for it (an
            # open call-up's 1/2/3 has one): not a question for the policy Q&A, not small talk (233), not a
            # knowledge gap — say so and show the menu to pick from.
            ctx.say("现在没有等您选择的编号（上次的选项已经用过或已过期）。")
            await self._start_intent_id(ctx, "help")
            return
        m = got or await self.understand(ctx.text, ctx.user.role_set)
        log.debug("route %s intent=%s confidence=%.2f how=%s", m.decision, m.intent.id if m.intent else None,
                  m.confidence, m.how)
        if m.decision == "route" and m.intent is not None:
            await self._start_intent(ctx, m.intent, m.slots)
            return
        if m.decision == "suggest" and m.suggestions:
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
            ctx.say(STAFF_ONLY)
            return
        if intent.flow in BUILTIN_COMMANDS:
            await self._command(ctx, intent)
            return
        ctx.intent_id = intent.id
        await self._start_flow(ctx, intent.flow, slots)

    async def _start_flow(self, ctx: Context, name: str, slots: dict[str, str]) -> None:
        for _ in range(5):  # a flow may switch to another in the same turn; bounded
            flow = get_flow(name)
            if not _allowed(flow, ctx):
                ctx.say(STAFF_ONLY)
                ctx.clear()
                return
            ctx.enter(name, slots)
            await flow.start(ctx)
            if ctx.next_flow is None:
                return
            name, slots = ctx.next_flow
            ctx.entry = "switch"

    async def _flow_step(self, ctx: Context) -> None:
        assert ctx.flow is not None
        flow = get_flow(ctx.flow)
        if not self._still_allowed(ctx, flow):
            return
        if ctx.picked is None:
            named = self.matcher.entry_named(ctx.text, ctx.user.role_set)
            if named is not None:  # 英烈名录 typed again at the search step: the feature, not a search
                await self._let_go(ctx, flow, named, {})
                return
        reasks, said = ctx.reasks, len(ctx.replies)
        await flow.step(ctx)
        if ctx.picked is None and not ctx.rerouted and ctx.next_flow is None and (
                ctx.reasks > reasks or ctx.reask_exhausted) and _WORDS.search(ctx.text):
            # Not a valid answer for this step. A message that clearly asks for another feature leaves the
            # flow and starts it (发起集结 inside 我的信息's edit menu) instead of a re-ask. Numbers (a wrong
            # code, a phone number with a typo) are attempts at an answer: they get the flow's re-ask.
            got = await self.understand(ctx.text, ctx.user.role_set, in_flow=True)
            if (got.decision == "route" and got.intent is not None and got.confidence >= LET_GO_AT
                    and got.intent.flow not in (SMALLTALK_FLOW, flow.name)):
                del ctx.replies[said:]
                ctx.reask_exhausted = False
                await self._let_go(ctx, flow, got.intent, got.slots)
                return
        if ctx.rerouted:
            ctx.clear()
            ctx.rerouted = False
            await self._match_and_start(ctx)
            return
        if ctx.next_flow is not None:
            name, slots = ctx.next_flow
            ctx.entry = "switch"
            await self._start_flow(ctx, name, slots)

    async def _let_go(self, ctx: Context, flow: Flow, intent: Intent, slots: dict[str, str]) -> None:
        """Leave ``flow`` (one line saying so) and start ``intent`` in the same turn (取消 / 返回 in own
        words — 这个不办了 — act on the flow as the commands do)."""
        if intent.flow in BUILTIN_COMMANDS:
            await self._command(ctx, intent)
            return
        if intent.flow != flow.name:
            ctx.say(f"已退出“{flow.title or '当前事项'}”。")
        ctx.clear()
        ctx.entry = "text"
        await self._start_intent(ctx, intent, slots)

    def _still_allowed(self, ctx: Context, flow: Flow) -> bool:
        """A flow's roles hold at every step, not only at its start: a staff member whose role was taken
        away in the middle of 发起集结 must not finish it. Otherwise the flow ends with a clear line."""
        if _allowed(flow, ctx):
            return True
        log.info("flow %s ended: the user no longer has its roles", flow.name)
        ctx.say(f"您已没有使用“{flow.title or '该功能'}”的权限，本次操作已结束，没有发送也没有保存任何内容。如有疑问请联系管理员。"
                "回复“帮助”查看您可以使用的功能。")
        ctx.clear()
        return False

    async def _command(self, ctx: Context, intent: Intent) -> None:
        if intent.flow == "cancel":
            if ctx.flow:
                title = get_flow(ctx.flow).title or "当前事项"
                ctx.say(f"已退出“{title}”。回复“帮助”查看功能。")
            else:
                ctx.say("当前没有进行中的事项。回复“帮助”查看功能。")
            ctx.clear()
            return
        if intent.flow == "back":
            if not ctx.flow:
                ctx.say("当前没有进行中的事项。回复“帮助”查看功能。")
                return
            flow = get_flow(ctx.flow)
            if not self._still_allowed(ctx, flow):
                return
            if ctx.back():
                await flow.prompt(ctx, ctx.step or "")
                return
            ctx.say("已经是第一步了。")
            ctx.entry = "back"  # the flow starts over; the text (返回) is not a request
            await flow.start(ctx)
            return
        ctx.clear()
        await self._start_flow(ctx, intent.flow, {})

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
            ctx.clear()
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
            ctx.clear()
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
        state = ctx.final_state()
        if ctx.inbound.kind == "event" and not ctx.replies and state.same_place(conv.state):
            # An event WeChat sends on its own (LOCATION reports, TEMPLATESENDJOBFINISH, VIEW …) is not the
            # user taking part: the conversation keeps its idle clock and its numbered options.
            return
        # Numbered options offered this turn are valid for the next message only (the state carries them).
        conv.state = state
        conv.updated_at = now
        conv.expired = False


def _allowed(flow: Flow, ctx: Context) -> bool:
    return not flow.roles or bool(flow.roles & ctx.user.role_set)
