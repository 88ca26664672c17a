"""Test helpers: an in-process bot reached through real signed XML, and script runners."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bot.chat import ChatSession, open_session, run_script
from bot.config import Config


@asynccontextmanager
async def chat_session(config: Config, *, background: bool = False) -> AsyncIterator[ChatSession]:
    """The app started in-process on a loopback port with a FakeClock (``chat.clock``);
    ``chat.runtime`` gives the database and services."""
    chat = await open_session(config, fake_clock=True, background=background)
    try:
        yield chat
    finally:
        await chat.close()


async def run_chat_script(config: Config, path: Path) -> int:
    """Run one YAML conversation script against a fresh in-process bot; raises ScriptFailure."""
    async with chat_session(config) as chat:
        return await run_script(chat, path, out=_Null())


class _Null:
    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        pass


@asynccontextmanager
async def app_client(config: Config, clock: object | None = None):  # type: ignore[no-untyped-def]
    """(aiohttp TestClient, Runtime) for the app built from ``config``, without background loops."""
    from aiohttp.test_utils import TestClient, TestServer

    from bot.app import build_runtime, create_app
    from bot.clock import FakeClock, SystemClock

    runtime = await build_runtime(config, clock=clock or FakeClock(SystemClock().now()))
    client = TestClient(TestServer(create_app(runtime, background=False)))
    await client.start_server()
    try:
        yield client, runtime
    finally:
        await client.close()
        await runtime.close()


async def post_xml(client, side, xml: str, **extra_query: str):  # type: ignore[no-untyped-def]
    """POST signed (or encrypted) ``xml`` as WeChat would; returns (status, body text)."""
    signed = side.sign(xml)
    query = {**signed.query, **extra_query}
    from bot.app import RUNTIME

    resp = await client.post(client.app[RUNTIME].config.server.path, params=query, data=signed.body.encode())
    return resp.status, await resp.text()


async def viewer_cookie(runtime: Any, openid: str, *, staff: bool = False) -> str:
    """The ``vb_who`` cookie WeChat OAuth leaves for ``openid`` (bot.web.viewer); ``staff`` first adds the
    person as a staff user (the roster page is for staff only)."""
    from bot.web.viewer import VIEWER_KIND, VIEWER_TTL
    from storage import linktokens
    from storage.models import User

    async with runtime.db.session() as s:
        now = runtime.clock.now()
        if staff:
            s.add(User(openid=openid, roles="staff", first_seen=now, last_seen=now))
        return await linktokens.issue(s, VIEWER_KIND, openid, {"m": None, "via": "oauth"}, VIEWER_TTL, now=now)
