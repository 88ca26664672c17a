"""`vetbot chat`: talk to the bot as a WeChat user, interactively or from a YAML script.

Every message is real signed (safe mode: encrypted) XML posted to the callback URL — either of a
running server (``--url``) or of the same app started in-process on a loopback port. Scripts are
how conversations are tested::

    as: u_veteran_1            # default sender (openid)
    steps:
      - send: 我的信息
        expect: 您还没有登记信息          # the reply contains this (text or list of texts)
      - send: 张建国
        expect_not: 格式不对
      - event: subscribe                 # an event instead of text (key: optional EventKey)
        key: qrscene_team:3
      - as: u_staff_1                    # switch sender for the following steps
      - expect_push:                     # a queued push (outbox row) exists
          to: u_veteran_1                # default: the current sender
          purpose: callup
          contains: 集合
      - advance: 31m                     # in-process only: move the bot's clock (s, m, h, d)
      - tick: expire_conversations       # in-process only: run a scheduled job now

A mismatch stops the script with a message naming the step and what came back (exit 1).
"""

from __future__ import annotations

import asyncio
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import select

from bot.clock import FakeClock, SystemClock
from bot.config import Config
from bot.sim import WeChatSide, event_xml, text_xml, voice_xml
from bot.yamlfile import YamlFileError, line_of, load_yaml
from storage.models import OutboxMessage

STEP_KEYS = {"send", "event", "key", "expect", "expect_not", "expect_none", "as", "expect_push", "advance",
             "tick", "note"}


class ScriptFailure(Exception):
    """A script step whose expectation did not hold."""


@dataclass
class ChatSession:
    """A connection to the bot's callback URL plus (in-process) the runtime behind it."""

    config: Config
    url: str
    side: WeChatSide
    http: aiohttp.ClientSession
    runtime: Any = None
    runner: web.AppRunner | None = None
    clock: Any = None
    log: list[tuple[str, str, str | None]] = field(default_factory=list)

    async def send_xml(self, xml: str) -> str | None:
        signed = self.side.sign(xml)
        async with self.http.post(self.url, params=signed.query, data=signed.body.encode("utf-8"),
                                  headers={"Content-Type": "text/xml"}) as resp:
            body = await resp.text()
            if resp.status != 200:
                raise ScriptFailure(f"server answered HTTP {resp.status}: {body[:200]}")
        reply = self.side.read_reply(body)
        if reply is None:
            return None
        return str(reply.get("Content") or reply.get("MsgType") or "")

    async def send(self, openid: str, text: str) -> str | None:
        reply = await self.send_xml(text_xml(openid, text))
        self.log.append((openid, text, reply))
        return reply

    async def event(self, openid: str, event: str, key: str | None = None) -> str | None:
        reply = await self.send_xml(event_xml(openid, event, key))
        self.log.append((openid, f"[{event} {key or ''}]", reply))
        return reply

    async def voice(self, openid: str, media_id: str = "") -> str | None:
        """Send a voice message without WeChat's Recognition (the fake serves its demo clip)."""
        from bot.fake_wechat import DEMO_VOICE_MEDIA_ID

        reply = await self.send_xml(voice_xml(openid, media_id or DEMO_VOICE_MEDIA_ID))
        self.log.append((openid, "[voice]", reply))
        return reply

    async def allow(self, openid: str, purposes: list[str]) -> str:
        """Press 允许 in WeChat's 订阅通知 popup for the purposes' templates (fake WeChat API only): the fake
        records the consent and the event it returns is posted to the bot, as WeChat does."""
        ids = {self.config.templates[p].subscribe.template_id: "accept" for p in purposes  # type: ignore[union-attr]
               if p in self.config.templates and self.config.templates[p].subscribe is not None}
        if not ids:
            return f"没有配置这些用途的订阅通知模板：{' '.join(purposes) or '（未指定）'}"
        url = self.config.wechat.api_base.rstrip("/") + "/__fake__/subscribe"
        async with self.http.post(url, json={"openid": openid, "templates": ids, "scene": 1}) as resp:
            if resp.status != 200:
                why = (await resp.text())[:120]
                return f"假微信 API 没有接受（HTTP {resp.status}：{why}）：/allow 只适用于本地演示的假微信 API"
            xml = (await resp.json())["xml"]
        await self.send_xml(xml)
        return f"已允许订阅通知：{'、'.join(ids)}"

    async def pushes(self, openid: str) -> list[OutboxMessage]:
        db = self.runtime.db if self.runtime is not None else None
        if db is None:
            from storage.db import Database

            db = Database(self.config.database.url)
            try:
                async with db.session() as s:
                    return list((await s.execute(select(OutboxMessage).where(OutboxMessage.openid == openid))).scalars())
            finally:
                await db.close()
        async with db.session() as s:
            return list((await s.execute(select(OutboxMessage).where(OutboxMessage.openid == openid))).scalars())

    async def close(self) -> None:
        await self.http.close()
        if self.runner is not None:
            await self.runner.cleanup()
        if self.runtime is not None:
            await self.runtime.close()


async def open_session(config: Config, url: str | None = None, *, fake_clock: bool = False,
                       background: bool = False) -> ChatSession:
    """Connect to ``url`` or start the app in-process on a free loopback port."""
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    side = WeChatSide(config)
    if url:
        return ChatSession(config, url, side, http)
    from bot.app import build_runtime, create_app

    clock = FakeClock(SystemClock().now()) if fake_clock else SystemClock()
    try:
        runtime = await build_runtime(config, clock=clock)
    except BaseException:
        await http.close()
        raise
    app = create_app(runtime, background=background)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return ChatSession(config, f"http://127.0.0.1:{port}{config.server.path}", side, http, runtime, runner, clock)


_DURATION = re.compile(r"^\+?(\d+(?:\.\d+)?)\s*([smhd])$")


def parse_duration(text: str) -> dict[str, float]:
    m = _DURATION.match(str(text).strip())
    if not m:
        raise ValueError(f"bad duration {text!r} (use e.g. 30s, 31m, 2h, 1d)")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
    return {unit: float(m.group(1))}


def _texts(v: Any) -> list[str]:
    return [str(x) for x in v] if isinstance(v, list) else [str(v)]


async def run_script(chat: ChatSession, path: Path, out: Any = sys.stdout) -> int:
    """Run a conversation script; returns the number of steps run. Raises ScriptFailure/YamlFileError."""
    doc = load_yaml(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list):
        raise YamlFileError(path, 1, "a script needs a 'steps:' list", "see `vetbot chat --help`")
    sender = str(doc.get("as") or "script_user")
    n = 0
    for step in doc["steps"]:
        line = line_of(step) or 0
        if not isinstance(step, dict):
            raise YamlFileError(path, line, "each step must be a mapping", "e.g. - send: 帮助")
        bad = [k for k in step if k not in STEP_KEYS]
        if bad:
            raise YamlFileError(path, line, f"unknown step key '{bad[0]}'", f"valid: {', '.join(sorted(STEP_KEYS))}")
        n += 1
        where = f"{path}:{line}"
        if "as" in step and len(step) == 1:
            sender = str(step["as"])
            continue
        who = str(step.get("as") or sender)
        reply: str | None = None
        sent = False
        if "send" in step:
            reply, sent = await chat.send(who, str(step["send"])), True
            print(f"[{who}] > {step['send']}\n< {reply if reply is not None else '(success)'}", file=out)
        elif "event" in step:
            reply, sent = await chat.event(who, str(step["event"]), step.get("key")), True
            print(f"[{who}] > [{step['event']}] \n< {reply if reply is not None else '(success)'}", file=out)
        if "advance" in step:
            if not isinstance(chat.clock, FakeClock):
                raise ScriptFailure(f"{where}: 'advance' needs the in-process chat (no --url)")
            chat.clock.advance(**parse_duration(step["advance"]))
        if "tick" in step:
            if chat.runtime is None:
                raise ScriptFailure(f"{where}: 'tick' needs the in-process chat (no --url)")
            await _run_tick(chat, str(step["tick"]))
        if sent:
            for want in _texts(step["expect"]) if "expect" in step else []:
                if reply is None or want not in reply:
                    raise ScriptFailure(f"{where}: expected the reply to contain {want!r}; got {reply!r}")
            for bad_text in _texts(step["expect_not"]) if "expect_not" in step else []:
                if reply is not None and bad_text in reply:
                    raise ScriptFailure(f"{where}: the reply must not contain {bad_text!r}; got {reply!r}")
            if step.get("expect_none") and reply is not None:
                raise ScriptFailure(f"{where}: expected no reply (success); got {reply!r}")
        if "expect_push" in step:
            spec = step["expect_push"] or {}
            to = str(spec.get("to") or who)
            rows = await chat.pushes(to)
            ok = [r for r in rows
                  if (not spec.get("purpose") or r.purpose == spec["purpose"])
                  and all(c in (r.payload or {}).get("text", "") for c in _texts(spec.get("contains", "")))]
            count = spec.get("count")
            if (count is None and not ok) or (count is not None and len(ok) != int(count)):
                seen = [(r.purpose, (r.payload or {}).get("text", "")[:60]) for r in rows]
                raise ScriptFailure(f"{where}: expected {count if count is not None else 'a'} push(es) to {to} "
                                    f"matching {dict(spec)}; found {len(ok)} of {seen}")
    return n


async def _run_tick(chat: ChatSession, name: str) -> None:
    from bot.scheduler import run_tick
    from flows.api import ticks

    for t in ticks():
        if t.name == name:
            await run_tick(t, chat.runtime.db, chat.runtime.services)
            return
    raise ScriptFailure(f"no scheduled job named {name!r}; known: {', '.join(t.name for t in ticks())}")


async def interactive(chat: ChatSession, openid: str) -> None:
    """A terminal chat: type messages, see replies; /as OPENID switches user, /event NAME [KEY], /quit."""
    print(f"已连接 {chat.url}，您的身份：{openid}。输入 /quit 退出，/as 用户 切换身份，/event subscribe 发送事件，"
          "/voice 发一条语音，/allow callup job_alert 在订阅通知弹窗里点“允许”（本地假微信）。")
    loop = asyncio.get_running_loop()
    while True:
        try:
            line = await loop.run_in_executor(None, input, f"{openid}> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return
        if line.startswith("/as "):
            openid = line[4:].strip()
            continue
        try:
            if line.startswith("/event "):
                parts = line.split()
                reply = await chat.event(openid, parts[1], parts[2] if len(parts) > 2 else None)
            elif line == "/voice" or line.startswith("/voice "):
                reply = await chat.voice(openid, line[len("/voice"):].strip())
            elif line.startswith("/allow"):
                reply = await chat.allow(openid, line[len("/allow"):].split())
            else:
                reply = await chat.send(openid, line)
        except (aiohttp.ClientError, ScriptFailure) as e:
            print(f"(发送失败：{e})")
            continue
        print(reply if reply is not None else "（无回复）")
