"""The turn store, one test class for every implementation (as aiogram runs one storage test class
against every FSM storage): ``store`` is the SQLite group-commit store or the PostgreSQL row-lock store,
following the ``db`` fixture's backends. Plus :func:`storage.conversations.reset`, the one way features
end conversations, and the inline statement runner of batched SQLite turns."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import bindparam, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.conversations import FlowState, reset
from storage.db import Database
from storage.models import Conversation, InboundDedup, OutboxMessage, Ticket, User
from storage.outbox import Push, enqueue
from storage.turnio import ConvRecord, Loaded, Replayed, TurnIO, TurnStore, inline_sql, runner, turn_store

NOW = datetime(2026, 5, 1, 8, 0, 0, 123456)
TTL = timedelta(hours=24)
NESTED = FlowState(flow="job_subscribe", step="salary",
                   slots={"d": {"mode": "daily", "words": ["保安", "司机"], "salary": None}, "edit": False},
                   stack=[{"step": "place", "slots": {"d": {"mode": "daily", "words": []}}}],
                   choices=[{"label": "是", "value": True}, {"label": "3000元以上", "value": 3000}],
                   choice_kind="flow", reasks=1)


@pytest.fixture
def store(db: Database) -> TurnStore:
    return turn_store(db)


async def _loaded(io: TurnIO, openid: str, key: str, now: datetime = NOW, subscribing: bool = False) -> Loaded:
    got = await io.load(openid, key, now, subscribing)
    assert isinstance(got, Loaded), got
    return got


async def _turn(store: TurnStore, openid: str, key: str, change: Any = None, reply: str | None = "好的",
                now: datetime = NOW) -> Loaded:
    """One turn: load, let ``change(loaded, io)`` alter the rows, save."""
    async def fn(io: TurnIO) -> Loaded:
        got = await _loaded(io, openid, key, now)
        if change is not None:
            await change(got, io)
        await io.save(got.user, got.conv, key, reply, now, TTL)
        return got

    return await store.run(openid, fn)


async def _rows(db: Database, openid: str) -> tuple[User | None, Conversation | None]:
    async with db.session() as s:
        return await s.get(User, openid), await s.get(Conversation, openid)


class TestTurnStore:
    async def test_load_of_a_new_user_creates_the_rows(self, db: Database, store: TurnStore) -> None:
        async def fn(io: TurnIO) -> Loaded:
            got = await _loaded(io, "u_new", "k1", subscribing=True)
            await io.save(got.user, got.conv, "k1", "欢迎", NOW, TTL)
            return got

        got = await store.run("u_new", fn)
        u = got.user
        assert (u.openid, u.subscribed, u.subscribed_at, u.first_seen, u.last_seen, u.kefu_sent, u.roles) == \
            ("u_new", True, NOW, NOW, NOW, 0, "")
        assert got.conv.state == FlowState() and got.conv.updated_at == NOW and not got.conv.expired
        user, conv = await _rows(db, "u_new")
        assert user is not None and user.subscribed and user.first_seen == NOW and user.role_set == set()
        assert conv is not None and conv.flow is None and conv.slots == {} and conv.choices == []

    async def test_load_of_an_existing_user_and_conversation(self, db: Database, store: TurnStore) -> None:
        async with db.session() as s:
            s.add(User(openid="u_old", subscribed=True, first_seen=NOW - TTL, last_seen=NOW - TTL, kefu_sent=2,
                       roles="staff,veteran", name="张建国", phone="13900000001", township="城关镇"))
            s.add(Conversation(openid="u_old", **NESTED.columns(), updated_at=NOW - timedelta(minutes=3),
                               expired=True))
        got = await _turn(store, "u_old", "k2")
        assert (got.user.name, got.user.phone, got.user.kefu_sent, got.user.township) == \
            ("张建国", "13900000001", 2, "城关镇")
        assert got.user.role_set == {"staff", "veteran"} and got.user.first_seen == NOW - TTL
        assert got.conv.state == NESTED
        assert got.conv.updated_at == NOW - timedelta(minutes=3) and got.conv.expired is True

    async def test_a_seen_dedup_key_replays_the_stored_reply(self, db: Database, store: TurnStore) -> None:
        await _turn(store, "u_rep", "m:1", reply="第一次的回复")
        await _turn(store, "u_rep", "m:2", reply=None)  # answered `success`, reply pushed later

        async def again(io: TurnIO) -> Any:
            return await io.load("u_rep", "m:1", NOW, False), await io.load("u_rep", "m:2", NOW, False)

        assert await store.run("u_rep", again) == (Replayed("第一次的回复"), Replayed(None))
        async with db.session() as s:
            d = await s.get(InboundDedup, "m:1")
            assert d is not None and d.created_at == NOW and d.expires_at == NOW + TTL

    async def test_save_writes_only_the_user_columns_the_turn_changed(self, db: Database,
                                                                      store: TurnStore) -> None:
        await _turn(store, "u_cols", "c1")

        async def change(got: Loaded, io: TurnIO) -> None:
            # Something else writes the row meanwhile (a role granted, a member bound): the turn's stale copy
            # of those columns must not overwrite it.
            await io.session.execute(update(User).where(User.openid == "u_cols")
                                     .values(roles="staff", phone="13900000002"))
            got.user.name = "李秀英"
            got.user.kefu_sent = 0  # unchanged value: not a change

        await _turn(store, "u_cols", "c2", change)
        user, _ = await _rows(db, "u_cols")
        assert user is not None
        assert (user.name, user.roles, user.phone) == ("李秀英", "staff", "13900000002")

    async def test_the_conversation_round_trips_with_nested_slots(self, db: Database, store: TurnStore) -> None:
        async def put(got: Loaded, io: TurnIO) -> None:
            got.conv.state = NESTED.snapshot()

        await _turn(store, "u_conv", "r1", put)

        async def nested(got: Loaded, io: TurnIO) -> None:
            assert got.conv.state == NESTED
            got.conv.state.slots["d"]["words"].append("保洁")  # changed in place, two levels down
            got.conv.state.stack[0]["slots"]["d"]["mode"] = "instant"

        await _turn(store, "u_conv", "r2", nested)
        got = await _turn(store, "u_conv", "r3")
        assert got.conv.state.slots["d"]["words"] == ["保安", "司机", "保洁"]
        assert got.conv.state.stack[0]["slots"]["d"]["mode"] == "instant"
        assert got.conv.state.choices == NESTED.choices and got.conv.state.choice_kind == "flow"
        _, conv = await _rows(db, "u_conv")
        assert conv is not None and conv.slots["d"]["salary"] is None and conv.reasks == 1

    async def test_turns_of_one_user_run_one_at_a_time(self, db: Database, store: TurnStore) -> None:
        events: list[tuple[str, int]] = []

        def turn(i: int) -> Any:
            async def change(got: Loaded, io: TurnIO) -> None:
                events.append(("in", i))
                for _ in range(3):
                    await asyncio.sleep(0)  # give the others every chance to cut in
                await io.session.execute(text("SELECT 1"))  # a round trip of a flow's own
                got.conv.state.slots["n"] = got.conv.state.slots.get("n", 0) + 1
                events.append(("out", i))
            return _turn(store, "u_same", f"s{i}", change)

        others = [_turn(store, f"u_other{i}", f"o{i}") for i in range(3)]
        await asyncio.gather(*(turn(i) for i in range(8)), *others)
        pairs = [(events[j], events[j + 1]) for j in range(0, len(events), 2)]
        assert all(a == ("in", b[1]) and b[0] == "out" for a, b in pairs), events
        _, conv = await _rows(db, "u_same")
        assert conv is not None and conv.slots["n"] == 8

    async def test_a_failing_turn_leaves_no_row(self, db: Database, store: TurnStore) -> None:
        async def boom(got: Loaded, io: TurnIO) -> None:
            got.conv.state = NESTED.snapshot()
            io.session.add(InboundDedup(key="side", reply=None, created_at=NOW, expires_at=NOW))
            raise RuntimeError("flow bug")

        with pytest.raises(RuntimeError):
            await _turn(store, "u_fail", "f1", boom)
        assert await _rows(db, "u_fail") == (None, None)
        async with db.session() as s:
            assert (await s.execute(select(InboundDedup.key))).scalars().all() == []


class TestReset:
    async def _conv(self, db: Database, openid: str, state: FlowState, updated: datetime) -> None:
        async with db.session() as s:
            s.add(Conversation(openid=openid, **state.columns(), updated_at=updated, expired=False))

    async def test_reset_clears_flows_and_open_menus_and_leaves_the_idle_clock(self, db: Database) -> None:
        menu = FlowState(choices=[{"label": "政策问答", "value": "policy_qa"}], choice_kind="intent")
        await self._conv(db, "u_flow", NESTED, NOW)
        await self._conv(db, "u_menu", menu, NOW)
        await self._conv(db, "u_idle", FlowState(), NOW)
        await self._conv(db, "u_other", NESTED, NOW)
        async with db.session() as s:
            await reset(s, ["u_menu", "u_flow", "u_idle", "u_nobody"])
        async with db.session() as s:
            rows = {c.openid: c for c in (await s.execute(select(Conversation))).scalars()}
        for openid in ("u_flow", "u_menu", "u_idle"):
            c = rows[openid]
            assert FlowState.from_columns({k: getattr(c, k) for k in FlowState.COLUMNS}) == FlowState()
            assert c.updated_at == NOW
        assert rows["u_other"].flow == NESTED.flow, "only the users named are reset"

    async def test_reset_skips_a_conversation_a_running_turn_holds(self, db: Database, store: TurnStore) -> None:
        if db.is_sqlite:
            pytest.skip("SQLite runs one transaction at a time: no turn can hold a row while reset runs")
        await _turn(store, "u_busy", "b1", lambda got, io: _set(got, NESTED))
        holding, release = asyncio.Event(), asyncio.Event()

        async def hold(got: Loaded, io: TurnIO) -> None:
            holding.set()
            await release.wait()

        running = asyncio.ensure_future(_turn(store, "u_busy", "b2", hold))
        await holding.wait()
        async with db.session() as s:
            await asyncio.wait_for(reset(s, ["u_busy"]), 5)  # must not wait for the turn's row lock
        release.set()
        got = await running
        assert got.conv.state.flow == NESTED.flow


async def _set(got: Loaded, state: FlowState) -> None:
    got.conv.state = state.snapshot()


def test_flowstate_is_the_shape_of_the_conversations_table() -> None:
    assert set(ConvRecord.COLUMNS) == {"openid", "updated_at", "expired", *FlowState.COLUMNS}
    assert FlowState().columns().keys() == set(FlowState.COLUMNS)


def test_flowstate_copies_are_deep() -> None:
    a = NESTED.snapshot()
    assert a == NESTED and a is not NESTED
    a.slots["d"]["words"].append("x")
    a.stack[0]["slots"]["d"]["words"].append("y")
    a.choices[0]["label"] = "否"
    assert NESTED.slots["d"]["words"] == ["保安", "司机"] and NESTED.stack[0]["slots"]["d"]["words"] == []
    assert NESTED.choices[0]["label"] == "是"
    t = NESTED.for_turn()
    assert t.same_place(NESTED) and t.choices == [] and t.choice_kind is None and t.reasks == 1
    t.slots["d"]["mode"] = "instant"
    assert not t.same_place(NESTED) and NESTED.slots["d"]["mode"] == "daily"
    assert NESTED.finished() == FlowState(choices=NESTED.choices, choice_kind="flow")
    assert NESTED.cleared() == FlowState() and FlowState().idle and not NESTED.idle


async def test_inline_statements_convert_values_as_the_orm_does(db: Database) -> None:
    """Inside a batched SQLite turn (before its ORM session is opened) Core statements run inline; what
    they write and read is what the ORM writes and reads. Elsewhere ``runner`` is the session."""
    push = Push(openid="u_inline", purpose="notice", key="n1", text="通知", data={"title": "通知"}, url="https://x/y")
    select_row = select(OutboxMessage.payload, OutboxMessage.due_at, OutboxMessage.skipped_channels) \
        .where(OutboxMessage.openid == "u_inline")

    async def fn(s: Any) -> Any:
        inline = inline_sql(s)
        assert (inline is not None) == db.is_sqlite
        written = await enqueue(s, [push, push], NOW)  # the second is a duplicate key
        row = (await runner(s).execute(select_row)).first()
        return written, inline_sql(s) is not None, row

    written, still_inline, row = await db.transaction(fn)
    assert written == 1 and still_inline == db.is_sqlite
    assert tuple(row) == ({"text": "通知", "data": {"title": "通知"}, "url": "https://x/y"}, NOW, [])
    async with db.session() as s:
        orm_row = (await s.execute(select_row)).first()
    assert tuple(orm_row) == tuple(row)

    # Python-side column defaults (status "open", context {}) filled in, and a value the statement carries
    # itself ("open") before a parameter.
    insert_ticket = (sqlite_insert if db.is_sqlite else pg_insert)(Ticket.__table__)
    open_tickets = select(Ticket.id, Ticket.context, Ticket.created_at).where(
        Ticket.status == "open", Ticket.openid == bindparam("o")).order_by(Ticket.id)

    async def tickets(s: Any) -> Any:
        sql = runner(s)
        await sql.execute(insert_ticket, {"openid": "u_inline", "text": "请回电话", "created_at": NOW})
        return (await sql.execute(open_tickets, {"o": "u_inline"})).all()

    (tid, context, created), = await db.transaction(tickets)
    assert context == {} and created == NOW
    async with db.session() as s:
        t = await s.get(Ticket, tid)
        assert t is not None and (t.status, t.context, t.text) == ("open", {}, "请回电话")
