"""A user's place in a conversation — :class:`FlowState` — and the one way features reset it.

The ``conversations`` table holds one row per user: the FlowState columns, plus ``updated_at`` (the idle
clock) and ``expired`` (set by the expiry tick). This module is the only one that knows that shape: the
dispatcher works on a FlowState, the turn store (:mod:`storage.turnio`) reads and writes it (inside a
:class:`storage.turnio.ConvRecord`), and features that must end conversations (a call-up fan-out) call :func:`reset`.

Slots, stack and numbered choices are JSON data (dicts, lists, strings, numbers). A turn works on a deep
copy of what it loaded (:meth:`FlowState.snapshot`), so a flow may change nested slots in place
(``ctx.slots["d"]["mode"] = …``): the change is saved, and the loaded state it is compared with, as well
as the copy remembered for 返回, stay as they were.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Conversation
from storage.sql import is_postgres

_EMPTY_JSON = frozenset({"{}", "[]", "null"})
#: A numbered option: ``{"label": text shown after its number, "value": JSON value, given back as ctx.picked}``.
Option = dict[str, Any]


def copy_json(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, scalars): several times faster than copy.deepcopy,
    and a turn makes one for every conversation it loads."""
    cls = value.__class__
    if cls is dict:
        return {k: copy_json(v) for k, v in value.items()} if value else {}
    if cls is list:
        return [copy_json(v) for v in value] if value else []
    if cls is tuple:
        return [copy_json(v) for v in value]  # JSON has no tuples: stored and loaded as a list
    return value


@dataclass(slots=True)
class FlowState:
    """Where a user is: the active ``flow`` and its ``step``, the flow's ``slots``, earlier (step, slots)
    pairs for 返回 (``stack``), the numbered options the user may answer with a digit (``choices``, of
    ``choice_kind`` "flow" or "intent") and how often the current step was re-asked (``reasks``).

    Numbered options are valid for the next message only: a turn reads the options it answers from the
    state it loaded and starts its own state without them (:meth:`for_turn`).
    """

    flow: str | None = None
    step: str | None = None
    slots: dict[str, Any] = field(default_factory=dict)
    stack: list[dict[str, Any]] = field(default_factory=list)
    choices: list[Option] = field(default_factory=list)
    choice_kind: str | None = None
    reasks: int = 0

    #: The table columns a FlowState fills, in field order.
    COLUMNS: ClassVar[tuple[str, ...]] = ("flow", "step", "slots", "stack", "choices", "choice_kind", "reasks")
    JSON: ClassVar[frozenset[str]] = frozenset({"slots", "stack", "choices"})

    # --- transitions -------------------------------------------------------------------------------
    def cleared(self) -> FlowState:
        """No flow and no numbered options: where every conversation starts, and where 取消, a menu click,
        an unfollow or :func:`reset` leave it."""
        return FlowState()

    def entered(self, flow: str, step: str | None = None, slots: dict[str, Any] | None = None) -> FlowState:
        """At the start of ``flow`` (nothing of the previous flow kept: no slots, no 返回 history)."""
        return FlowState(flow=flow, step=step, slots=slots if slots is not None else {})

    def finished(self) -> FlowState:
        """The flow is over; numbered options offered on the way out (a "您是想" list) stay answerable."""
        return FlowState(choices=self.choices, choice_kind=self.choice_kind)

    def for_turn(self) -> FlowState:
        """The state a turn starts from: a deep copy (nested changes never reach the loaded state), without
        the numbered options, which answer this message only."""
        return FlowState(self.flow, self.step, copy_json(self.slots), copy_json(self.stack), [], None,
                         self.reasks)

    def snapshot(self) -> FlowState:
        """A deep copy."""
        return FlowState(self.flow, self.step, copy_json(self.slots), copy_json(self.stack),
                         copy_json(self.choices), self.choice_kind, self.reasks)

    # --- reading -----------------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """No flow running and no numbered options open."""
        return self.flow is None and not self.choices

    def same_place(self, other: FlowState) -> bool:
        """The same flow, step, slots and 返回 history (numbered options and re-ask counts aside)."""
        return (self.flow == other.flow and self.step == other.step and self.slots == other.slots
                and self.stack == other.stack)

    # --- columns -----------------------------------------------------------------------------------
    def columns(self) -> dict[str, Any]:
        """The table columns as Python values (SQLAlchemy statements serialise the JSON ones)."""
        return {"flow": self.flow, "step": self.step, "slots": self.slots, "stack": self.stack,
                "choices": self.choices, "choice_kind": self.choice_kind, "reasks": self.reasks}

    @classmethod
    def from_columns(cls, row: Mapping[str, Any]) -> FlowState:
        """From the columns as a database returns them: JSON as text (plain sqlite3) or decoded (SQLAlchemy)."""
        return cls(row.get("flow"), row.get("step"), _json(row.get("slots"), dict), _json(row.get("stack"), list),
                   _json(row.get("choices"), list), row.get("choice_kind"), int(row.get("reasks") or 0))


def _json(v: Any, empty: type) -> Any:
    if v is None:
        return empty()
    if v.__class__ is str:
        # Most conversations are idle: their slots / stack / choices are empty, skip the parser.
        return empty() if v in _EMPTY_JSON else json.loads(v)
    return v


async def reset(session: AsyncSession, openids: Sequence[str]) -> None:
    """End whatever these users are in — a flow, or numbered options waiting for a digit — so that their
    next message is read afresh (a call-up's 1 / 2 / 3 then answers the call-up, not an old menu).

    The one way a feature clears conversations: the rows get :meth:`FlowState.cleared`; the idle clock
    is left alone. On PostgreSQL rows locked by a running turn are skipped: that user is chatting right
    now, and waiting for their lock here could deadlock with their turn waiting for a row this
    transaction holds (a call-up's)."""
    values = FlowState().columns()
    pg = is_postgres(session)
    busy = or_(Conversation.flow.is_not(None), Conversation.choice_kind.is_not(None))
    ids = sorted(set(openids))  # one lock order for every caller
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        cond = Conversation.openid.in_(chunk)
        if pg:
            free = select(Conversation.openid).where(cond, busy).with_for_update(skip_locked=True).scalar_subquery()
            await session.execute(update(Conversation).where(Conversation.openid.in_(free)).values(**values)
                                  .execution_options(synchronize_session=False))
        else:
            await session.execute(update(Conversation).where(cond, busy).values(**values)
                                  .execution_options(synchronize_session=False))
