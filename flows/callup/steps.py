"""Escalation steps of a call-up: typed, frozen, one class per kind, each with its own ``run``.

A call-up's chain is decided when it is created and frozen into its row (``callups.chain``, a JSON
list); the pointer ``callups.step`` says which step runs next and ``next_due_at`` when (the manner of
Grafana OnCall's escalation snapshot). The stored form of a step is a plain dict with its kind in
``"do"`` — the form call-ups created before these classes existed already use, so old rows load
unchanged:

    {"do": "renotify", "n": 1, "wait_min": 10}
    {"do": "widen", "teams": [4, 5], "label": "同乡镇其他队伍", "wait_min": 20}
    {"do": "staff_alert", "wait_min": 30}

``wait_min`` counts from the step before (the first from creation). A step's ``run`` does its work
through an :class:`Escalation` (the call-up's operations, implemented by :mod:`.service` under the
call-up's row lock), records its event and returns the line staff are told. A stored kind this code
does not know (a newer version wrote it, or a hand edit) loads as :class:`UnknownStep`: it alerts staff
instead of stopping the chain.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol


class Targeted(NamedTuple):
    """Members a call-up just targeted: ``added`` (available), ``away`` (on leave, skipped), ``unbound``
    (of the added, without WeChat) and ``sms`` (of those, sent the call-up by SMS)."""

    added: int
    away: int
    unbound: int
    sms: int = 0

    @property
    def reached(self) -> int:
        """Members a push went to (WeChat or SMS)."""
        return self.added - self.unbound + self.sms

    def words(self) -> str:
        """"通知 12 人（其中 3 人未绑定微信，已发短信）" and the like, for staff."""
        text = f"通知 {self.reached} 人"
        if self.sms:
            text += f"（其中 {self.sms} 人未绑定微信，已发短信）"
        phone = self.unbound - self.sms
        if phone:
            text += f"（另有 {phone} 人未绑定微信，需电话通知）"
        return text


class Escalation(Protocol):
    """What a step may do to its call-up (see :func:`flows.callup.service.run_step`)."""

    async def remind_pending(self, n: int) -> int:
        """Push the n-th reminder to members without an answer; returns how many were reminded."""

    async def target_teams(self, team_ids: Sequence[int], wave: int) -> Targeted:
        """Call the members of more teams; returns who was targeted and how they were reached."""

    def event(self, kind: str, **detail: Any) -> None:
        """Add an entry to the call-up's audit trail."""


@dataclass(frozen=True)
class Step:
    """One step of a chain. Subclasses set ``kind`` (the stored ``"do"``) and implement ``run``."""

    wait_min: int
    kind: ClassVar[str] = ""

    def label(self) -> str:
        """What the step does, in the words staff read (升级顺序, 下一步)."""
        raise NotImplementedError

    async def run(self, esc: Escalation, index: int) -> str:
        """Do the step (its position in the chain is ``index``); returns the line staff are told."""
        raise NotImplementedError

    def dump(self) -> dict[str, Any]:
        """The stored form (a plain dict with the kind in ``"do"``)."""
        return {"do": self.kind, "wait_min": self.wait_min}


@dataclass(frozen=True)
class Renotify(Step):
    """Remind every targeted member who has not answered (the n-th reminder)."""

    n: int = 1
    kind: ClassVar[str] = "renotify"

    def label(self) -> str:
        return f"第{self.n}次提醒未回复人员"

    async def run(self, esc: Escalation, index: int) -> str:
        members = await esc.remind_pending(self.n)
        esc.event("renotified", step=index, n=self.n, members=members)
        return f"已第{self.n}次提醒未回复人员（{members} 人）。"

    def dump(self) -> dict[str, Any]:
        return {"do": self.kind, "n": self.n, "wait_min": self.wait_min}


@dataclass(frozen=True)
class Widen(Step):
    """Call the available members of more teams (``teams``), named ``group`` in texts."""

    teams: tuple[int, ...] = ()
    group: str = ""
    kind: ClassVar[str] = "widen"

    def label(self) -> str:
        return f"扩大到{self.group or '更多队伍'}"

    async def run(self, esc: Escalation, index: int) -> str:
        got = await esc.target_teams(self.teams, index + 1)
        esc.event("widened", step=index, teams=list(self.teams), targets=got.added, skipped_away=got.away,
                  unbound=got.unbound, sms=got.sms)
        return f"人数未满，已扩大到{self.group or '更多队伍'}，新{got.words()}。"

    def dump(self) -> dict[str, Any]:
        return {"do": self.kind, "teams": list(self.teams), "label": self.group, "wait_min": self.wait_min}


@dataclass(frozen=True)
class StaffAlert(Step):
    """Tell staff the quorum is still not met when the chain has run out."""

    kind: ClassVar[str] = "staff_alert"

    def label(self) -> str:
        return "提醒工作人员人数未满"

    async def run(self, esc: Escalation, index: int) -> str:
        esc.event("staff_alert", step=index)
        return "⚠ 已到升级时限，人数仍未满足，请工作人员电话联系或调整集结。"


@dataclass(frozen=True)
class UnknownStep(Step):
    """A stored step of a kind this version does not know: staff are alerted, the chain goes on."""

    raw: tuple[tuple[str, Any], ...] = ()
    kind: ClassVar[str] = "unknown"

    def label(self) -> str:
        return "未知的升级步骤（请工作人员处理）"

    async def run(self, esc: Escalation, index: int) -> str:
        esc.event("unknown_step", step=index, stored=dict(self.raw))
        return "⚠ 升级步骤无法识别，已跳过。人数仍未满足，请工作人员电话联系或调整集结。"

    def dump(self) -> dict[str, Any]:
        return dict(self.raw)


KINDS: dict[str, type[Step]] = {k.kind: k for k in (Renotify, Widen, StaffAlert)}


def _int(v: Any, default: int) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def load_step(stored: Mapping[str, Any], index: int = 0) -> Step:
    """A step from its stored dict (never raises: odd data loads as :class:`UnknownStep`)."""
    kind = stored.get("do") if isinstance(stored, Mapping) else None
    wait = max(0, _int(stored.get("wait_min"), 0)) if isinstance(stored, Mapping) else 0
    if kind == Renotify.kind:
        return Renotify(wait_min=wait, n=_int(stored.get("n"), index + 1))
    if kind == Widen.kind:
        teams = tuple(i for i in (stored.get("teams") or []) if isinstance(i, int))
        return Widen(wait_min=wait, teams=teams, group=str(stored.get("label") or ""))
    if kind == StaffAlert.kind:
        return StaffAlert(wait_min=wait)
    raw = tuple(sorted((str(k), v) for k, v in stored.items())) if isinstance(stored, Mapping) else ()
    return UnknownStep(wait_min=wait, raw=raw)


def load_chain(stored: Iterable[Mapping[str, Any]] | None) -> tuple[Step, ...]:
    """A call-up's chain from its ``chain`` column."""
    return tuple(load_step(d, i) for i, d in enumerate(stored or []))


def dump_chain(chain: Iterable[Step]) -> list[dict[str, Any]]:
    """The stored form of a chain (for the ``chain`` column)."""
    return [s.dump() for s in chain]


@dataclass(frozen=True)
class Timing:
    """The waits of a call-up type (config ``callup:`` with ``callup.types`` overrides)."""

    renotify_after_min: int
    renotify_max: int
    widen_after_min: int
    staff_alert_after_min: int


def build_chain(timing: Timing, selected: Sequence[Any], all_teams: Sequence[Any],
                widen: Sequence[Sequence[int]] | None = None) -> tuple[Step, ...]:
    """The chain of a new call-up: renotify × renotify_max → widen to the other teams of the same
    townships → widen to every other team (or the explicit ``widen`` groups, in order) → alert staff.

    ``selected`` and ``all_teams`` are teams (``id``, ``name``, ``township``)."""
    chain: list[Step] = [Renotify(wait_min=timing.renotify_after_min, n=i)
                         for i in range(1, max(0, timing.renotify_max) + 1)]
    chosen = {t.id for t in selected}
    groups: list[tuple[tuple[int, ...], str]] = []
    if widen is not None:
        by_id = {t.id: t for t in all_teams}
        for g in widen:
            ids = tuple(i for i in g if i in by_id and i not in chosen)
            if ids:
                groups.append((ids, "、".join(by_id[i].name for i in ids)))
                chosen.update(ids)
    else:
        towns = {t.township for t in selected}
        near = [t for t in all_teams if t.id not in chosen and t.township in towns]
        if near:
            groups.append((tuple(t.id for t in near), "同乡镇其他队伍"))
            chosen.update(t.id for t in near)
        rest = [t for t in all_teams if t.id not in chosen]
        if rest:
            groups.append((tuple(t.id for t in rest), "全部其余队伍"))
    chain += [Widen(wait_min=timing.widen_after_min, teams=ids, group=lab) for ids, lab in groups]
    chain.append(StaffAlert(wait_min=timing.staff_alert_after_min))
    return tuple(chain)
