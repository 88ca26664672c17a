"""Fixtures of the staff console tests: the app (fake clock) wired to an in-process fake WeChat API,
users with roles, and a logged-in client (by a one-time link, as a staff member would)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bot.clock import FakeClock
from bot.config import Config
from bot.fake_wechat import FakeWeChatServer, fake_openid
from bot.sim import WeChatSide
from storage import console as store
from storage.db import Database
from storage.models import User
from tests.conftest import make_config
from tests.helpers import app_client

T0 = datetime(2026, 7, 1, 2, 0, 0)  # 10:00 in Asia/Shanghai
ADMIN = fake_openid(900)
STAFF = fake_openid(901)
PUBLIC = fake_openid(902)


def console_config(db_url: str, **over: Any) -> Config:
    """The example config on ``db_url``: no sentence encoder (fast start), help as the fallback flow."""
    return make_config(db_url, bot__fallback_flow="help", qa__use_encoder="false", **over)


async def add_user(db: Database, openid: str, now: datetime, *, roles: str = "", name: str | None = None,
                   subscribed: bool = True, township: str | None = None, kind: str | None = None,
                   phone: str | None = None) -> None:
    async with db.session() as s:
        s.add(User(openid=openid, subscribed=subscribed, first_seen=now, last_seen=now, roles=roles, name=name,
                   township=township, kind=kind, phone=phone, subscribed_at=now, kefu_sent=0))


@dataclass
class Site:
    """The running app, its runtime and clock, the fake WeChat API and a WeChat-side signer."""

    client: TestClient
    runtime: Any
    fake: FakeWeChatServer
    config: Config
    clock: FakeClock
    side: WeChatSide

    @property
    def db(self) -> Database:
        return self.runtime.db

    async def link(self, openid: str, ttl_min: int = 10) -> str:
        """A fresh one-time login link token for ``openid``."""
        async with self.db.session() as s:
            return await store.create_link(s, openid, self.clock.now(), timedelta(minutes=ttl_min))

    async def login(self, openid: str) -> str:
        """Log this client in as ``openid`` through a link; returns the CSRF token of the session."""
        raw = await self.link(openid)
        resp = await self.client.post("/staff/login/link", data={"t": raw}, allow_redirects=False)
        assert resp.status == 303, await resp.text()
        return await self.csrf()

    async def csrf(self) -> str:
        body = await (await self.client.get("/staff/")).text()
        m = re.search(r'name="csrf" value="([0-9a-f]+)"', body)
        assert m, body[:500]
        return m.group(1)

    async def chat(self, openid: str, text: str) -> str | None:
        """Send a text message through the real callback (signed, encrypted XML)."""
        from bot.sim import text_xml

        return await self._post(text_xml(openid, text))

    async def event(self, openid: str, event: str, key: str | None = None, *, later_s: int = 0) -> str | None:
        """An event through the real callback; ``later_s`` moves its CreateTime (the same event in the same
        second is a WeChat retry and gets the stored reply)."""
        import time

        from bot.sim import event_xml

        return await self._post(event_xml(openid, event, key, create_time=int(time.time()) + later_s))

    async def _post(self, xml: str) -> str | None:
        signed = self.side.sign(xml)
        resp = await self.client.post(self.config.server.path, params=signed.query, data=signed.body.encode())
        assert resp.status == 200, await resp.text()
        reply = self.side.read_reply(await resp.text())
        return None if reply is None else str(reply.get("Content") or "")


@pytest.fixture
async def site(db_url: str) -> AsyncIterator[Site]:
    """The app on a fresh database (SQLite and PostgreSQL), with an admin and a staff member."""
    async with FakeWeChatServer() as fake:
        cfg = console_config(db_url, wechat__api_base=fake.base_url)
        clock = FakeClock(T0)
        async with app_client(cfg, clock) as (client, runtime):
            await add_user(runtime.db, ADMIN, T0, roles="admin,staff", name="管理员甲")
            await add_user(runtime.db, STAFF, T0, roles="staff", name="工作人员乙")
            await add_user(runtime.db, PUBLIC, T0, name="群众丙")
            yield Site(client, runtime, fake, cfg, clock, WeChatSide(cfg))


SECRET_BITS = ("秘密通知标题", "秘密集合地点", "秘密寄语内容", "管理员甲", "工作人员乙", "群众丙", "13900000000")


async def seed_everything(site: Site) -> dict[str, int]:
    """One of everything the console shows (a notice, a call-up, a pending 寄语, a ticket), each carrying
    a marker from :data:`SECRET_BITS`; returns their ids."""
    from flows.broadcast import service as broadcasts
    from flows.callup import service as callups
    from storage.memorial import PENDING, add_message
    from storage.models import Ticket
    from tests.callup.conftest import TEAMS, roster_rows, seed

    now = site.clock.now()
    teams = await seed(site.db, roster_rows(TEAMS, 3), now)
    async with site.db.session() as s:
        q = await broadcasts.queue(s, now, title="秘密通知标题", text="正文", by=ADMIN, via="console")
        c = await callups.create_callup(s, site.runtime.services, callups.CallupSpec(
            kind="防汛", title="防汛集结", place="秘密集合地点", assemble_at=now + timedelta(hours=1), needed=2,
            team_ids=[teams[TEAMS[0][0]]]), now)
        m = await add_message(s, openid=PUBLIC, martyr_id=0, text="秘密寄语内容", preset=False, status=PENDING,
                              now=now, day=now.date())
        t = Ticket(openid=PUBLIC, text="人工留言", context={}, status="open", created_at=now)
        s.add(t)
        await s.flush()
        return {"broadcast": q.broadcast_id or 0, "callup": c.id, "message": m.id, "ticket": t.id}


def staff_routes(app: Any) -> list[tuple[str, str]]:
    """Every (method, path pattern) the app serves under /staff."""
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or ""
        if path == "/staff" or path.startswith("/staff/"):
            out.append((route.method, path))
    return sorted(set(out))
