"""Fixtures for the outbox tests: the fake WeChat API, a fake SMS gateway, a sender on a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.clock import FakeClock
from bot.config import Config
from bot.fake_sms import FakeSmsGateway as _FakeSmsGateway
from bot.fake_wechat import FakeWeChatServer, fake_openid, templates_of
from bot.outbox import OutboxSender, build_sender
from storage.db import Database
from storage.models import OutboxMessage, User
from storage.outbox import Push, enqueue
from tests.conftest import make_config

SMS_SECRET = "sms-hmac-secret-for-tests"


class FakeSmsGateway(_FakeSmsGateway):
    """The bundled fake gateway (:mod:`bot.fake_sms`) with the tests' secret."""

    def __init__(self, secret: str = SMS_SECRET, header: str = "X-Vetbot-Signature") -> None:
        super().__init__(secret, header)


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeChatServer]:
    async with FakeWeChatServer() as server:
        yield server


@pytest.fixture
async def sms_gateway() -> AsyncIterator[FakeSmsGateway]:
    gw = await FakeSmsGateway().start()
    yield gw
    await gw.stop()


def outbox_config(db_url: str, fake: FakeWeChatServer, **overrides: object) -> Config:
    """The example config against ``fake``, with test-friendly outbox numbers."""
    base: dict[str, object] = {"wechat__api_base": fake.base_url, "wechat__appid": fake.state.appid,
                               "outbox__backoff_base_s": 2, "outbox__max_attempts": 4}
    base.update(overrides)
    return make_config(db_url, **base)


@pytest.fixture
def cfg(db_url: str, fake: FakeWeChatServer) -> Config:
    c = outbox_config(db_url, fake)
    # The account's templates, as added in the console: any other id gets 40037 like on the platform.
    fake.state.add_templates(templates_of(c))
    return c


@pytest.fixture
async def sender(db: Database, cfg: Config, clock: FakeClock) -> AsyncIterator[OutboxSender]:
    s = build_sender(cfg, db, clock, worker="test-sender")
    yield s
    await s.close()


def uid(n: int) -> str:
    return fake_openid(n)


async def add_user(db: Database, openid: str, now: datetime, **fields: Any) -> None:
    """Insert a users row (followed, no window) with ``fields`` overriding."""
    values: dict[str, Any] = {"openid": openid, "subscribed": True, "first_seen": now, "last_seen": now,
                              "kefu_sent": 0, "roles": ""}
    values.update(fields)
    async with db.session() as s:
        s.add(User(**values))


async def set_user(db: Database, openid: str, **fields: Any) -> None:
    async with db.session() as s:
        await s.execute(update(User).where(User.openid == openid).values(**fields))


async def queue(db: Database, now: datetime, *pushes: Push) -> int:
    async with db.session() as s:
        return await enqueue(s, list(pushes), now)


def notice(openid: str, key: str = "n1", purpose: str = "notice", **kw: Any) -> Push:
    data = {"title": "通知", "content": "本周六上午9点在局里开会", "time": "04月04日 09:00"}
    data.update(kw.pop("data", {}))
    return Push(openid=openid, purpose=purpose, key=key, text=kw.pop("text", "本周六上午9点在局里开会"),
                data=data, **kw)


async def rows(db: Database) -> list[OutboxMessage]:
    async with db.session() as s:
        return list((await s.execute(select(OutboxMessage).order_by(OutboxMessage.id))).scalars())


async def row_of(db: Database, openid: str) -> OutboxMessage:
    async with db.session() as s:
        return (await s.execute(select(OutboxMessage).where(OutboxMessage.openid == openid))).scalar_one()


async def user_of(db: Database, openid: str) -> User:
    async with db.session() as s:
        return (await s.execute(select(User).where(User.openid == openid))).scalar_one()


def calls(fake: FakeWeChatServer, path: str) -> list[dict[str, Any]]:
    return [c for c in fake.state.calls if c["path"] == path]


KEFU_PATH = "/cgi-bin/message/custom/send"
SUBSCRIBE_PATH = "/cgi-bin/message/subscribe/bizsend"
TEMPLATE_PATH = "/cgi-bin/message/template/send"
TOKEN_PATH = "/cgi-bin/stable_token"
