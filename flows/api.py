"""The small API a flow sees.

A flow is a class registered with :func:`flow`. The dispatcher calls :meth:`Flow.start` when an
intent (or a menu choice) enters it and :meth:`Flow.step` for every later message while it is
active. The flow talks back only through its :class:`Context`: ``say``, ``ask``, ``reask``,
``choose``, ``end``, ``switch``, ``push``, and the database ``session`` of the current turn (one
transaction: what the flow writes and the pushes it queues commit together, or not at all). Where the
user is — flow, step, slots, 返回 history, numbered options — is one value, ``ctx.state`` (a
:class:`FlowState`, owned by :mod:`storage.conversations`), saved at the end of every turn; a flow with
``roles`` is checked against the user's roles at its start and at every later step.

A flow never sees aiohttp or the WeChat client. Example::

    @flow
    class Greet(Flow):
        name = "greet"
        title = "打招呼"

        async def start(self, ctx: Context) -> None:
            await ctx.ask("name", "您怎么称呼？")

        async def step(self, ctx: Context) -> None:
            if ctx.step == "name":
                ctx.say(f"{ctx.text}，您好！")
                ctx.end()

        async def prompt(self, ctx: Context, step: str) -> None:
            ctx.say("您怎么称呼？")

Scheduled work registers with :func:`tick`; QR-scene handlers with :func:`on_scene`; handlers of
WeChat events the dispatcher has no rule for (订阅通知 choices …) with :func:`on_event`; start-up
work (loading a knowledge base) with :func:`on_startup`; a message that must be read before the open
numbered menu and the active flow (an open call-up's answer) with :func:`before_route`; a message that must
be read before everything, global commands included (a person talking to staff in 人工), with :func:`takeover`.

This module is the whole surface of the runtime a flow may use: besides the flow API it hands on the
runtime's neutral helpers, so that a flow imports ``flows.api``, its own package and ``storage`` —
never ``bot`` (an import-linter contract in ``pyproject.toml`` fails the tests otherwise):

- text: :func:`normalize`, :func:`light_normalize`, :func:`strip_fillers`, :func:`parse_choice`,
  :func:`plain_text`, :func:`clip`, :func:`clean_phone`, :data:`PHONE_RE`, :func:`ascii_uint`;
- answers in plain words: :func:`parse_yes_no`, :func:`parse_minutes`, :func:`parse_end_date`,
  :func:`fmt_day`, :func:`match_township`, :func:`parse_callup_answer` (:class:`CallupReading`,
  :data:`CONFIRM`);
- time: :class:`Clock`, :func:`to_local`, :func:`from_local`, :func:`fmt_local`;
- signed links: :func:`sign`, :func:`sign_link`, :class:`Signer` (or :meth:`Services.link`); opaque
  links kept in the database: :func:`answer_links` (a call-up's answer page, for members with or without
  WeChat), :class:`JobLinks` (a person's job pages);
- config: :class:`Config`, :class:`ConfigError`;
- YAML files: :func:`load_yaml`, :func:`line_of`, :func:`check_unique_keys`, :class:`YamlFileError`,
  :class:`DuplicateKeyError`;
- CSV files: :func:`read_csv` with a :class:`Schema` of :class:`Column` s, giving a :class:`Table`
  (:class:`RowError` s, :class:`PreviewRow` s, :class:`ImportReport`).

A flow that needs another helper of the runtime adds it here (and to ``__all__``) and to the
``flows.api -> bot.…`` lines of the layers contract, so the surface stays one reviewed list.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy.ext.asyncio import AsyncSession

# The runtime's neutral helpers, handed on to flows (see the module docstring and __all__).
from bot.answers import (
    CONFIRM,
    CallupReading,
    fmt_day,
    match_township,
    parse_callup_answer,
    parse_end_date,
    parse_minutes,
    parse_yes_no,
)
from bot.clock import Clock, fmt_local, from_local, to_local
from bot.config import Config, ConfigError
from bot.csvfile import Column, ImportReport, PreviewRow, RowError, Schema, Table, read_csv
from bot.intents import light_normalize
from bot.links import JobLinks, Signer, answer_links, sign, sign_link
from bot.text import (
    PHONE_RE,
    ascii_uint,
    clean_phone,
    clip,
    normalize,
    parse_choice,
    plain_text,
    strip_fillers,
)
from bot.yamlfile import DuplicateKeyError, YamlFileError, check_unique_keys, line_of, load_yaml
from storage.conversations import FlowState, copy_json
from storage.outbox import Push, enqueue

if TYPE_CHECKING:
    from bot.intents import IntentMatcher
    from flows.memorial.wordfilter import WordFilter
    from flows.policy_qa.engine import QAEngine
    from flows.policy_qa.flow import Prefetch
    from storage.db import Database
    from storage.turnio import UserRecord


__all__ = [  # noqa: RUF022 - grouped by kind, as in the module docstring
    # the flow API
    "Context", "Flow", "FlowError", "FlowState", "Inbound", "Push", "SceneFn", "Services", "Tick",
    "TickContext", "before_route", "before_route_hooks", "event_handlers", "flow", "flows", "get_flow",
    "load_all", "on_event", "on_scene", "on_startup", "scenes", "startup_hooks", "tick", "ticks",
    # text
    "PHONE_RE", "ascii_uint", "clean_phone", "clip", "light_normalize", "normalize", "parse_choice",
    "plain_text", "strip_fillers",
    # answers in plain words
    "CONFIRM", "CallupReading", "fmt_day", "match_township", "parse_callup_answer", "parse_end_date",
    "parse_minutes", "parse_yes_no",
    # time
    "Clock", "fmt_local", "from_local", "to_local",
    # signed links
    "Signer", "sign", "sign_link", "answer_links", "JobLinks",
    # config
    "Config", "ConfigError",
    # YAML files
    "DuplicateKeyError", "YamlFileError", "check_unique_keys", "line_of", "load_yaml",
    # CSV files
    "Column", "ImportReport", "PreviewRow", "RowError", "Schema", "Table", "read_csv",
]


class FlowError(Exception):
    """A flow registry or flow definition problem (raised at start-up, never to a user)."""


@dataclass
class Services:
    """Process-wide things flows may use: config, clock, database, link signer and the long-lived
    objects of the understanding layer and of features, each a typed field.

    The runtime sets ``matcher``; a feature fills its own field from an :func:`on_startup` hook (a field
    left None: that hook has not run, e.g. in a test that builds Services by hand). A new feature with a
    long-lived object adds a field here — no string-keyed bag, so a typo is an error a checker sees.
    """

    config: Config
    clock: Clock
    db: Database | None = None
    #: The intent catalogue's matcher (set by :func:`bot.app.build_runtime`): 帮助's menu, and flows
    #: that must know whether an intent claims a text before treating it as their own input.
    matcher: IntentMatcher | None = None
    #: The policy Q&A engine (:func:`flows.policy_qa.flow.engine_of` loads it once per process).
    qa_engine: QAEngine | None = None
    #: (digest of the console's KB edits, monotonic time of the last look at the database) for
    #: :func:`flows.policy_qa.flow.engine_of`: several processes on PostgreSQL notice another's edit.
    qa_engine_seen: tuple[str, float] | None = None
    #: Matches a free-text message on the Q&A thread before its turn starts (the dispatcher calls it;
    #: :class:`flows.policy_qa.flow.Prefetch`, set when the knowledge base is loaded).
    qa_prefetch: Prefetch | None = None
    #: The memorial's sensitive-word filter (:func:`flows.memorial.service.word_filter` reads it).
    words: WordFilter | None = None

    def link(self, path: str, **claims: Any) -> str:
        """An absolute, HMAC-signed link to a page of this server (see :func:`sign_link`)."""
        return sign_link(self.config, path, **claims)


@dataclass
class Inbound:
    """What the user sent, reduced to what flows need."""

    kind: str  # text, voice, image, location, link, event, …
    text: str = ""
    event: str | None = None  # subscribe, unsubscribe, click, scan, location, view, …
    event_key: str | None = None
    msg_id: int | None = None
    created_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Context:
    """Everything a flow may read or do during one turn.

    ``ctx.state`` is the user's :class:`FlowState` for this turn (a deep copy of what was loaded: change
    nested slots in place freely, the change is saved); ``ctx.flow``, ``ctx.step``, ``ctx.slots``,
    ``ctx.stack``, ``ctx.choices``, ``ctx.choice_kind`` and ``ctx.reasks`` read and write its fields.
    The rest of a Context (replies, ``picked``, ``entry``, ``ended`` …) lives for this turn only."""

    def __init__(self, *, user: UserRecord, inbound: Inbound, session: AsyncSession, services: Services,
                 now: datetime, state: FlowState | None = None) -> None:
        self.user = user
        self.inbound = inbound
        self.session = session
        self.services = services
        self.now = now
        self.state = state if state is not None else FlowState()
        #: The flow and step the user was at when this turn began (what 人工 tells staff the person was doing).
        self.began: tuple[str | None, str | None] = (self.state.flow, self.state.step)
        # Named groups of the intent regex that started the flow (e.g. 找工作 保安 -> {"words": "保安"}).
        self.intent_slots: dict[str, str] = {}
        #: The id of the intent that started the current flow this turn (None: a flow continuing, a switch).
        self.intent_id: str | None = None
        #: How the current flow was entered: "text" (an intent matched the user's words), "choice"
        #: (a numbered menu pick), "menu" (a custom-menu click), "fallback" (no intent claimed the
        #: text), "switch" (another flow handed over) or "back" (返回 at the first step: the flow starts
        #: over). A flow started by "choice"/"menu"/"back" should not treat ctx.text (a digit, an empty
        #: click, 返回) as the user's request.
        self.entry = "text"
        # The step and slots the turn began at: ask() pushes them on the stack for 返回 (a deep copy, so
        # that changes made in place during the turn do not reach the remembered step).
        self._turn_step = self.state.step
        self._turn_slots = copy_json(self.state.slots)
        self.replies: list[str] = []
        #: The value of the numbered option the user just picked (None when the text is not a pick).
        self.picked: Any = None
        self.ended = False
        self.reask_exhausted = False
        self.next_flow: tuple[str, dict[str, str]] | None = None
        self.rerouted = False
        self.pushes = 0
        #: When the question now waiting for an answer — the active flow's step or a numbered menu — was
        #: asked (naive UTC); None when nothing waits. Set by the dispatcher for :func:`before_route` hooks.
        self.asked_at: datetime | None = None
        #: Set by a flow whose reply carries a one-time secret (a login link): the reply is not kept for
        #: replaying to WeChat's retries of this message (a retry gets a note to ask again instead).
        self.secret_reply = False
        #: ``async fn(session)`` run after the dispatcher has written the turn's own rows (user,
        #: conversation, dedup), in the same transaction: 注销 erases the person there, so that nothing the
        #: turn writes afterwards brings their openid back.
        self.after_save: list[Callable[[Any], Awaitable[None]]] = []

    # --- the conversation state (fields of ctx.state) ----------------------------------------------
    @property
    def flow(self) -> str | None:
        """The active flow's name (None: no flow)."""
        return self.state.flow

    @flow.setter
    def flow(self, value: str | None) -> None:
        self.state.flow = value

    @property
    def step(self) -> str | None:
        """The active flow's current step."""
        return self.state.step

    @step.setter
    def step(self, value: str | None) -> None:
        self.state.step = value

    @property
    def slots(self) -> dict[str, Any]:
        """The active flow's values (JSON data), kept across its turns."""
        return self.state.slots

    @slots.setter
    def slots(self, value: dict[str, Any]) -> None:
        self.state.slots = value

    @property
    def stack(self) -> list[dict[str, Any]]:
        """Earlier (step, slots) of this flow, for 返回; maintained by :meth:`ask`."""
        return self.state.stack

    @stack.setter
    def stack(self, value: list[dict[str, Any]]) -> None:
        self.state.stack = value

    @property
    def choices(self) -> list[dict[str, Any]]:
        """Numbered options offered this turn (:meth:`choose`); valid for the user's next message only."""
        return self.state.choices

    @choices.setter
    def choices(self, value: list[dict[str, Any]]) -> None:
        self.state.choices = value

    @property
    def choice_kind(self) -> str | None:
        """What a pick of :attr:`choices` does: "flow" (it comes back to the flow as ``ctx.picked``) or
        "intent" (it starts that intent)."""
        return self.state.choice_kind

    @choice_kind.setter
    def choice_kind(self, value: str | None) -> None:
        self.state.choice_kind = value

    @property
    def reasks(self) -> int:
        """How often the current step was asked again (see :meth:`reask`)."""
        return self.state.reasks

    @reasks.setter
    def reasks(self, value: int) -> None:
        self.state.reasks = value

    def enter(self, flow: str, intent_slots: dict[str, str] | None = None, *, step: str | None = None,
              slots: dict[str, Any] | None = None) -> None:
        """Put the user into ``flow`` afresh (nothing of the previous flow kept). The dispatcher calls it
        before :meth:`Flow.start`; a QR-scene handler calls it (with the ``step`` and ``slots`` to wait
        at) to hand the user's next message to a flow."""
        self.state = self.state.entered(flow, step, slots)
        self.intent_slots = intent_slots or {}
        self.ended, self.next_flow = False, None
        self._turn_step, self._turn_slots = None, {}

    def clear(self) -> None:
        """Leave any flow and drop the numbered options at once (取消, a menu click, a timeout)."""
        self.state = self.state.cleared()
        self.ended = False
        self._turn_step = None

    def back(self) -> bool:
        """返回: go to the previous step with its slots as they were; False (and the flow at its start,
        nothing filled in) when there is no previous step."""
        if not self.stack:
            self.step, self.slots, self._turn_step = None, {}, None
            return False
        prev = self.stack.pop()
        self.step, self.slots = prev["step"], copy_json(prev["slots"])
        self._turn_step = None  # re-prompting must not push the step we just left
        return True

    def final_state(self) -> FlowState:
        """The state to store after this turn: without the flow when it ended (numbered options offered
        on the way out stay), re-asks counted only inside a flow."""
        state = self.state.finished() if self.ended else self.state
        if state.flow is None:
            state.reasks = 0
        return state

    # --- reading -------------------------------------------------------------------------------
    @property
    def openid(self) -> str:
        return self.user.openid

    @property
    def text(self) -> str:
        """The user's text, stripped (voice messages: WeChat's speech recognition)."""
        return self.inbound.text.strip()

    @property
    def norm(self) -> str:
        """The normalised text (see :func:`normalize`)."""
        return normalize(self.inbound.text)

    @property
    def config(self) -> Config:
        return self.services.config

    def choice(self, upper: int) -> int | None:
        """The user's reply read as a number 1..upper, or None."""
        return parse_choice(self.inbound.text, upper)

    # --- replying ------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        """Add a paragraph to the reply (all paragraphs of a turn go out as one message)."""
        if text:
            self.replies.append(text)

    async def ask(self, step: str, prompt: str) -> None:
        """Move to ``step`` (remembering the current one for 返回) and say ``prompt``."""
        if self._turn_step is not None and self._turn_step != step and self.step == self._turn_step:
            self.stack.append({"step": self._turn_step, "slots": self._turn_slots})
            del self.stack[:-10]
        self.step = step
        self.reasks = 0
        self.say(prompt)

    def reask(self, hint: str) -> bool:
        """Say why the answer was not understood. Returns False (and ends the flow politely) once the
        user has been re-asked ``bot.max_reasks`` times."""
        self.reasks += 1
        if self.reasks > self.services.config.bot.max_reasks:
            self.say("好像没能理解您的意思，先结束这一步。回复“帮助”查看功能，回复“人工”给工作人员留言。")
            self.reask_exhausted = True
            self.end()
            return False
        self.say(hint)
        return True

    def choose(self, options: list[tuple[str, Any]], header: str = "", footer: str = "",
               kind: str = "flow") -> None:
        """Offer numbered options (1. … 2. …); the user's digit comes back to :meth:`Flow.step`
        with ``ctx.picked`` set to the option's value."""
        self.choices = [{"label": label, "value": value} for label, value in options]
        self.choice_kind = kind
        lines = [header] if header else []
        lines += [f"{i}. {label}" for i, (label, _) in enumerate(options, 1)]
        if footer:
            lines.append(footer)
        self.say("\n".join(lines))

    def end(self) -> None:
        """Leave the flow after this turn."""
        self.ended = True

    def reroute(self) -> None:
        """End this flow and route the same message afresh (intents, then the fallback flow).

        For flows that only wait for an optional follow-up (a number, 相关 …): anything else the user
        writes is a new request, not a wrong answer."""
        self.rerouted = True
        self.ended = True

    def switch(self, flow_name: str, intent_slots: dict[str, str] | None = None) -> None:
        """End this flow and start ``flow_name`` in the same turn."""
        self.next_flow = (flow_name, intent_slots or {})
        self.ended = True

    # --- side effects --------------------------------------------------------------------------
    async def push(self, push: Push) -> int:
        """Queue a push in this turn's transaction (delivered by the outbox after commit)."""
        self.pushes += 1
        return await enqueue(self.session, push, self.now)


class Flow:
    """Base class of a flow. Subclasses set ``name`` (unique) and ``title`` (menu label)."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    # Roles allowed to enter (empty: everyone). E.g. frozenset({"staff"}).
    roles: ClassVar[frozenset[str]] = frozenset()

    async def start(self, ctx: Context) -> None:
        """Entered from an intent, a menu key or a menu choice."""
        raise NotImplementedError

    async def step(self, ctx: Context) -> None:
        """A message while this flow is active at ``ctx.step`` (``ctx.picked`` set for a numbered
        choice)."""
        raise NotImplementedError

    async def prompt(self, ctx: Context, step: str) -> None:
        """Say the question of ``step`` again (after 返回). Default: start over."""
        await self.start(ctx)


FlowFactory = type[Flow]
_FLOWS: dict[str, Flow] = {}
TickFn = Callable[["TickContext"], Awaitable[None]]


@dataclass
class Tick:
    name: str
    seconds: float
    fn: TickFn


@dataclass
class TickContext:
    """What a scheduled job gets: the database, services and the injected clock."""

    db: Database
    services: Services
    now: datetime


_TICKS: dict[str, Tick] = {}
SceneFn = Callable[[Context, str], Awaitable[bool]]
_SCENES: dict[str, SceneFn] = {}
StartupFn = Callable[[Services], Awaitable[None]]
_STARTUP: list[StartupFn] = []
BeforeRouteFn = Callable[[Context], Awaitable[bool]]
_BEFORE_ROUTE: dict[str, BeforeRouteFn] = {}
_TAKEOVER: dict[str, BeforeRouteFn] = {}
EventFn = Callable[[Context], Awaitable[None]]
_EVENTS: dict[str, EventFn] = {}


def flow(cls: FlowFactory) -> FlowFactory:
    """Class decorator registering a flow under ``cls.name``."""
    if not cls.name:
        raise FlowError(f"{cls.__qualname__} has no name")
    existing = _FLOWS.get(cls.name)
    if existing is not None and type(existing).__qualname__ != cls.__qualname__:
        raise FlowError(f"two flows named {cls.name!r}: {type(existing).__qualname__} and {cls.__qualname__}")
    _FLOWS[cls.name] = cls()
    return cls


def tick(name: str, seconds: float) -> Callable[[TickFn], TickFn]:
    """Register a scheduled job run every ``seconds`` by the scheduler (one process at a time)."""

    def deco(fn: TickFn) -> TickFn:
        _TICKS[name] = Tick(name, seconds, fn)
        return fn

    return deco


def on_scene(prefix: str) -> Callable[[SceneFn], SceneFn]:
    """Handle a parameter-QR scene ``<prefix>…`` (subscribe via QR or SCAN). The handler gets the
    rest of the scene string and returns True when it replied."""

    def deco(fn: SceneFn) -> SceneFn:
        _SCENES[prefix] = fn
        return fn

    return deco


def on_event(event: str) -> Callable[[EventFn], EventFn]:
    """Handle a WeChat event the dispatcher has no rule of its own for (``event`` lower-case, e.g.
    ``subscribe_msg_popup_event``). The handler runs inside the turn's transaction; it reads
    ``ctx.inbound.extra`` and may ``ctx.say`` a reply."""

    def deco(fn: EventFn) -> EventFn:
        _EVENTS[event.lower()] = fn
        return fn

    return deco


def on_startup(fn: StartupFn) -> StartupFn:
    """Run ``fn(services)`` once when the app (or the in-process chat) starts."""
    _STARTUP.append(fn)
    return fn


def before_route(fn: BeforeRouteFn) -> BeforeRouteFn:
    """Register ``fn(ctx) -> bool``, run for every text message after the global commands (帮助, 取消 …)
    and before the open numbered menu, the active flow and intent matching. Returning True means the
    hook handled the message (it replied, and may have set ``ctx.flow``/``ctx.step`` to ask a follow-up);
    the dispatcher then drops the open menu and routes nothing else.

    For messages that must win over whatever the conversation was doing — an answer to an open call-up
    from a member who has not answered it. Hooks run on every message: return False fast (check a role
    before querying) and claim only what is unmistakably yours; ``ctx.asked_at`` tells when the waiting
    question was asked. Registered by qualified name, so re-importing a module does not add it twice."""
    _BEFORE_ROUTE[f"{fn.__module__}.{fn.__qualname__}"] = fn
    return fn


def before_route_hooks() -> list[BeforeRouteFn]:
    return list(_BEFORE_ROUTE.values())


def takeover(fn: BeforeRouteFn) -> BeforeRouteFn:
    """Register ``fn(ctx) -> bool``, run FIRST for every message a person sends (text, voice, image, link …;
    not events): before the global commands (帮助, 取消 …), the idle timeout, the open menu and the active flow.
    Returning True means the hook handled the message; nothing else routes it.

    For a conversation that is no longer with the bot at all — a person talking to staff through an open
    人工 ticket, whose 取消 or 帮助 are words for the staff member. Runs on every message: return False at once
    unless ``ctx.state`` says the conversation is yours (no database query for everyone else)."""
    _TAKEOVER[f"{fn.__module__}.{fn.__qualname__}"] = fn
    return fn


def takeover_hooks() -> list[BeforeRouteFn]:
    return list(_TAKEOVER.values())


def load_all() -> None:
    """Import every module under ``flows`` so decorators register their flows, ticks and hooks."""
    import flows

    for mod in pkgutil.walk_packages(flows.__path__, prefix="flows."):
        importlib.import_module(mod.name)


def get_flow(name: str) -> Flow:
    try:
        return _FLOWS[name]
    except KeyError:
        raise FlowError(f"no flow named {name!r}; known: {', '.join(sorted(_FLOWS))}") from None


def flows() -> dict[str, Flow]:
    return dict(_FLOWS)


def ticks() -> list[Tick]:
    return list(_TICKS.values())


def scenes() -> dict[str, SceneFn]:
    return dict(_SCENES)


def startup_hooks() -> list[StartupFn]:
    return list(_STARTUP)


def event_handlers() -> dict[str, EventFn]:
    return dict(_EVENTS)
