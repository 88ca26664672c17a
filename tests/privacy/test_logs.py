"""Logs carry no names, phone numbers or message texts: a full scripted conversation at DEBUG, every record
of every logger captured (as written by vetbot's handler and unformatted), then searched."""

from __future__ import annotations

import io
import logging

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from bot.logsafe import configure, redact
from tests.conftest import make_config
from tests.helpers import chat_session
from tests.memorial.conftest import seed_roll
from tests.privacy.conftest import NAME, PERSON, PHONE, T0, say, seed_team, use_everything

#: What the scripted person typed that is theirs: none of it may reach a log.
TYPED = ["您为祖国献出了生命，我们永远怀念您", "麻烦回电", "城南水文站"]


class _Raw(logging.Handler):
    """Every record as the code logged it: message with arguments and traceback, nothing masked."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._fmt = logging.Formatter("%(name)s %(levelname)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self._fmt.format(record))


async def test_a_full_conversation_at_debug_logs_no_personal_data(db_url: str) -> None:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    out = io.StringIO()
    handler = configure("DEBUG", out)
    raw = _Raw()
    root.addHandler(raw)
    # Even with SQL logging switched on by an operator, statements carry no values (hide_parameters).
    sql = logging.getLogger("sqlalchemy.engine")
    sql_level = sql.level
    sql.setLevel(logging.INFO)
    try:
        await seed_team(db_url, T0)
        await seed_roll(db_url)
        cfg = make_config(db_url, bot__fallback_flow="help")
        async with chat_session(cfg) as chat:
            chat.clock.set(T0)
            await use_everything(chat)
            await say(chat, "我的数据")
            await say(chat, "注销")
            assert "已删除" in await say(chat, "确认")
    finally:
        sql.setLevel(sql_level)
        root.removeHandler(raw)
        root.removeHandler(handler)
        root.setLevel(saved[0])
    written = out.getvalue()
    everything = "\n".join(raw.lines)
    assert "erasure #1 (self)" in written, "the capture must see vetbot's own records (else this proves nothing)"
    assert any(" DEBUG consent" in line for line in raw.lines), "DEBUG records must be captured too"
    assert any("sqlalchemy.engine" in line and "INSERT INTO" in line for line in raw.lines)
    for needle in [NAME, PHONE, PHONE[:3] + "****" + PHONE[-4:], *TYPED]:
        assert needle not in everything, f"{needle!r} reached a log record"
        assert needle not in written, f"{needle!r} reached the log output"
    assert PERSON not in written


def test_redact_masks_phones_and_cuts_database_error_details() -> None:
    assert redact("call 13687654321 or 136-8765-4321 now") == "call 136****4321 or 136****4321 now"
    assert redact("order 20240101123456789") == "order 20240101123456789"  # not a phone: digits around it
    detail = 'duplicate key value violates unique constraint\nDETAIL:  Key (phone)=(13687654321) already exists.'
    assert "13687654321" not in redact(detail) and "Key (phone)=(…)" in redact(detail)
    params = "(sqlite3.IntegrityError) UNIQUE constraint failed\n[SQL: INSERT …]\n[parameters: ('欧阳振华', '13687654321')]"
    assert "欧阳振华" not in redact(params) and "[parameters hidden]" in redact(params)


async def test_a_database_error_in_a_log_carries_no_values(db_url: str) -> None:
    """hide_parameters on the engine: an error during a write with someone's name in it logs without it."""
    from storage.db import Database

    db = Database(db_url)
    out = io.StringIO()
    root = logging.getLogger()
    saved = root.level
    handler = configure("DEBUG", out)
    try:
        try:
            async with db.session() as s:
                await s.execute(text("INSERT INTO users (openid, subscribed, first_seen, last_seen, kefu_sent, roles, name) "
                                     "VALUES (:o, true, :t, :t, 0, '', :n)"), {"o": "x1", "t": T0, "n": NAME})
                await s.execute(text("INSERT INTO users (openid, subscribed, first_seen, last_seen, kefu_sent, roles, name) "
                                     "VALUES (:o, true, :t, :t, 0, '', :n)"), {"o": "x1", "t": T0, "n": NAME})
        except IntegrityError:
            logging.getLogger("vetbot.test").exception("write failed")
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)
        await db.close()
    assert "write failed" in out.getvalue() and "IntegrityError" in out.getvalue()
    assert NAME not in out.getvalue()
