"""The WeChat callback: verify, decrypt, parse, dedup-key, run the turn inside the deadline, reply.

Modes (``wechat.mode``, as chosen in the console's 消息加解密方式):

* ``safe``: only encrypted callbacks (``msg_signature`` over the ciphertext, appid checked inside);
  an unencrypted one is refused, whatever its URL ``signature`` says: that signature does not cover
  the body, so a captured URL would otherwise carry any body as any user.
* ``compat``: encrypted and plain callbacks; a body that carries ``<Encrypt>`` is always verified and
  decrypted, and its plaintext copy is ignored. The reply is encrypted when the request was.
* ``plain``: unencrypted callbacks only.

In every mode a (timestamp, nonce) pair seen before with another body is refused (:mod:`bot.replay`).

Refusals never become a 500: bad or missing signature / stale timestamp / a reused URL / an
unencrypted callback in safe mode → 403, body too large → 413, malformed XML or XML with DTD/entity
declarations → 400. Each refusal is logged with its reason only (no message text, no personal data).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import traceback
from typing import Any
from xml.parsers.expat import ExpatError

import xmltodict
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError
from wechatpy import create_reply, parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
from wechatpy.utils import check_signature

from bot.config import Config, check_callback
from bot.dispatcher import Dispatcher, TurnControl
from bot.replay import MemoryReplayGuard, ReplayGuard, replay_guard
from bot.text import ascii_uint
from flows.api import Inbound
from storage.db import DatabaseUnavailable

log = logging.getLogger("vetbot.gateway")

SUCCESS = "success"
BUSY_TEXT = "系统繁忙，您的消息暂时没能处理，请稍后再发一次。"
_PARSE_ERRORS = (ValueError, ExpatError, KeyError, TypeError, AttributeError, IndexError)
#: The dedup key column's width; longer keys keep their start and end in a hash.
_KEY_WIDTH = 160
#: A Unix timestamp in seconds has 10 digits until the year 2286; more is not a timestamp (and a
#: 400-digit one would overflow the float comparison with the clock).
_MAX_TS_DIGITS = 12


class Refusal(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def to_inbound(msg: Any) -> Inbound | None:
    """Reduce a wechatpy message/event to an :class:`Inbound`; None for types we ignore."""
    # wechatpy's private ``_data`` on purpose: it is the raw field dict parse_message() read (BaseMessage
    # keeps it, no public accessor), while its typed attributes convert lazily and raise on odd values
    # (``msg.id`` on a MsgId that is not a number). If wechatpy renames it, every message would read as
    # empty: tests/test_wechatpy_internals.py fails then.
    raw: dict[str, Any] = getattr(msg, "_data", {}) or {}
    mtype = str(raw.get("MsgType", "")).lower()
    msg_id = _int(raw.get("MsgId") or raw.get("MsgID")) or None  # not msg.id: it raises on a non-number
    if mtype == "text":
        return Inbound(kind="text", text=str(raw.get("Content") or ""), msg_id=msg_id)
    if mtype == "voice":
        rec = raw.get("Recognition")
        # The audio, for our own recogniser (bot/voice.py): WeChat is retiring Recognition.
        media = {"media_id": str(raw.get("MediaId") or "")[:128], "format": str(raw.get("Format") or "")[:16]}
        # WeChat's own speech recognition: elderly users often speak instead of typing.
        if rec:
            return Inbound(kind="text", text=str(rec), msg_id=msg_id, extra={"voice": "wechat", **media})
        return Inbound(kind="voice", msg_id=msg_id, extra=media)
    if mtype == "location":
        return Inbound(kind="location", msg_id=msg_id, extra={
            "latitude": _float(raw.get("Location_X")), "longitude": _float(raw.get("Location_Y")),
            "label": raw.get("Label")})
    if mtype == "event":
        event = str(raw.get("Event") or "").lower()
        key = raw.get("EventKey")
        key = None if key is None else str(key)
        if event == "subscribe_scan":  # wechatpy strips qrscene_ from the key and renames the event
            event, key = "subscribe", f"qrscene_{key}"
        extra: dict[str, Any] = {}
        if event == "location":
            extra = {"latitude": _float(raw.get("Latitude")), "longitude": _float(raw.get("Longitude"))}
        elif event == "templatesendjobfinish":
            extra = {"msg_id": _int(raw.get("MsgID") or raw.get("MsgId")), "status": raw.get("Status")}
        elif event.startswith("subscribe_msg_"):
            extra = {"subscribe": _subscribe_list(raw)}  # 订阅通知 choices and results (flows/notices.py)
        return Inbound(kind="event", event=event, event_key=key, extra=extra)
    if mtype in ("image", "video", "shortvideo", "link", "file"):
        return Inbound(kind=mtype, msg_id=msg_id)
    return None


def _subscribe_list(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``<List>`` entries of a 订阅通知 event as plain dicts: ``template_id``, ``status``
    (SubscribeStatusString), ``scene`` (PopupScene), ``msg_id``, ``error_code``, ``error_status``.

    WeChat wraps them in SubscribeMsgPopupEvent / SubscribeMsgChangeEvent / SubscribeMsgSentEvent (the
    official change-event sample uses the popup tag, so any of them is read); one entry comes as a
    mapping, several as a list. Entries without a template id are dropped."""
    out: list[dict[str, Any]] = []
    for tag in ("SubscribeMsgPopupEvent", "SubscribeMsgChangeEvent", "SubscribeMsgSentEvent"):
        block = raw.get(tag)
        items = block.get("List") if isinstance(block, dict) else None
        for item in items if isinstance(items, list) else [items]:
            if not isinstance(item, dict) or not isinstance(item.get("TemplateId"), str):
                continue
            out.append({"template_id": item["TemplateId"].strip()[:64],
                        "status": str(item.get("SubscribeStatusString") or "").strip().lower()[:16],
                        "scene": str(item.get("PopupScene") or "").strip()[:16] or None,
                        "msg_id": _int(item.get("MsgID") or item.get("MsgId")),
                        "error_code": str(item.get("ErrorCode") or "").strip()[:16] or None,
                        "error_status": str(item.get("ErrorStatus") or "").strip()[:64] or None})
    return out[:50]


def _int(v: Any) -> int | None:
    """WeChat's MsgId as a number (19 digits at most, a BIGINT); None when absent or not one."""
    n = ascii_uint(v, 19)
    return n if n is not None and n < 2**63 else None


def has_dtd(xml: bytes) -> bool:
    """True when a DTD (``<!DOCTYPE``, and with it any entity declaration) stands before the root element.

    Only the prolog is read: that is the one place XML allows a DTD, so a user who writes
    "<!DOCTYPE html>" inside a message's CDATA is not refused. Comments and processing instructions
    in the prolog are skipped; any other ``<!`` there is refused."""
    i = 0
    while True:
        j = xml.find(b"<", i)
        if j < 0:
            return False
        if xml.startswith(b"<!--", j):
            end = xml.find(b"-->", j + 4)
        elif xml.startswith(b"<?", j):
            end = xml.find(b"?>", j + 2)
        else:
            return xml.startswith(b"<!", j)  # the root element, or a DTD before it
        if end < 0:
            return False  # an unclosed comment: expat refuses it as malformed
        i = end + 2


def _float(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def encrypt_of(body: bytes) -> str | None:
    """The ``<Encrypt>`` text of a callback body (safe or compatible mode), None when it has none.

    Read from the body, not from the URL's ``encrypt_type``: a compatible-mode body posted without it
    must still be verified and decrypted, never taken by its plaintext copy. Only a body that contains
    the word is parsed (a message text that mentions "<Encrypt>" sits inside Content, not beside it)."""
    if b"Encrypt" not in body:
        return None
    try:
        root = xmltodict.parse(body).get("xml")
    except (*_PARSE_ERRORS, ExpatError):
        raise Refusal(400, "malformed XML") from None
    if not isinstance(root, dict) or "Encrypt" not in root:
        return None
    enc = root["Encrypt"]
    if not isinstance(enc, str):
        raise Refusal(400, "malformed encrypted XML")
    return enc


def dedup_key(msg: Any) -> str:
    """Sender+MsgId for messages; FromUserName+CreateTime+Event+EventKey for events (wechatpy gives them
    id 0). A message's key names its sender: a MsgId another openid sent is another message (and must
    never get this one's stored reply)."""
    raw = getattr(msg, "_data", {}) or {}  # the raw fields: see to_inbound() for why the private name
    mid = raw.get("MsgId") or raw.get("MsgID")
    if str(raw.get("MsgType", "")).lower() != "event" and mid and str(mid) != "0":
        key = f"m:{raw.get('FromUserName')}:{mid}"
    else:
        key = f"e:{raw.get('FromUserName')}:{raw.get('CreateTime')}:{raw.get('Event')}:{raw.get('EventKey') or ''}"
    if len(key) <= _KEY_WIDTH:
        return key
    # Cut to the column's width without making two long keys equal (events differing at the end).
    return f"{key[:_KEY_WIDTH - 41]}#{hashlib.sha1(key.encode()).hexdigest()}"


async def _done_within(task: asyncio.Future[Any], seconds: float) -> bool:
    """Wait up to ``seconds`` for ``task`` (a task or a future) without ever cancelling it; True when done.

    What ``wait_for(shield(task))`` does, with one future and one timer instead of the extra futures,
    tasks and callbacks of the two (measured: 15 instead of 22 µs a turn)."""
    if task.done():
        return True
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(seconds, wake)
    task.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        task.remove_done_callback(wake)
    return task.done()


class Gateway:
    """aiohttp handlers for the callback URL."""

    def __init__(self, config: Config, dispatcher: Dispatcher, *, wall_clock: Any = time.time,
                 replay: ReplayGuard | None = None) -> None:
        check_callback(config)
        self.cfg = config
        self.dispatcher = dispatcher
        self.wall_clock = wall_clock
        w = config.wechat
        self.mode = config.wechat_mode
        self.crypto = WeChatCrypto(w.token, w.encoding_aes_key, w.appid) if self.mode != "plain" else None
        self.replay = replay or replay_guard(dispatcher.db, config.server.timestamp_window_s,
                                             config.bot.dedup_ttl_h * 3600.0, clock=wall_clock)
        # SQLite keeps the pairs in memory: checked without a coroutine on the hot path.
        self._memory = self.replay if isinstance(self.replay, MemoryReplayGuard) else None
        self._background: set[asyncio.Future[Any]] = set()
        self.refusals: dict[str, int] = {}

    def _refuse(self, status: int, reason: str) -> web.Response:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1
        log.warning("refused callback: %s (HTTP %d)", reason, status)
        return web.Response(status=status, text=reason)

    def _check_timestamp(self, ts: str | None) -> int:
        when = ascii_uint(ts, _MAX_TS_DIGITS)
        if when is None:
            raise Refusal(403, "missing or bad timestamp")
        window = self.cfg.server.timestamp_window_s
        if window and abs(self.wall_clock() - when) > window:
            raise Refusal(403, "timestamp outside the allowed window")
        return when

    async def verify_url(self, request: web.Request) -> web.Response:
        """GET: WeChat's URL check (服务器配置 → 提交): answer ``echostr`` unchanged when the plain
        ``signature`` over token, timestamp and nonce is right, as the Official Account docs say.

        Nothing else: no ``msg_signature`` form that would decrypt a ciphertext ``echostr`` (WeCom's
        check), which turned this URL into a decryption service for whoever holds the token."""
        q = request.query
        echostr = q.get("echostr", "")
        try:
            self._check_timestamp(q.get("timestamp"))
            if not q.get("nonce"):
                raise Refusal(403, "missing nonce")
            if not q.get("signature"):
                raise Refusal(403, "missing signature")
            check_signature(self.cfg.wechat.token, q["signature"], q["timestamp"], q["nonce"])
        except Refusal as r:
            return self._refuse(r.status, r.reason)
        except InvalidSignatureException:
            return self._refuse(403, "bad signature")
        return web.Response(text=echostr)

    async def receive(self, request: web.Request) -> web.Response:
        """POST: one message or event."""
        try:
            return await self._receive(request)
        except Refusal as r:
            return self._refuse(r.status, r.reason)
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(413, "body too large")

    async def _receive(self, request: web.Request) -> web.Response:
        q = request.query
        limit = self.cfg.server.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise Refusal(413, "body too large")
        body = await request.read()
        if len(body) > limit:
            raise Refusal(413, "body too large")
        ts, nonce = q.get("timestamp"), q.get("nonce")
        when = self._check_timestamp(ts)
        if not nonce:
            raise Refusal(403, "missing nonce")
        assert ts is not None
        if has_dtd(body):
            raise Refusal(400, "XML with DTD or entity declarations")
        enc = encrypt_of(body)
        encrypted = enc is not None or q.get("encrypt_type", "raw").lower() == "aes"
        if encrypted:
            if self.crypto is None:
                raise Refusal(400, "encrypted message but wechat.mode is plain (no encoding_aes_key)")
            sig = q.get("msg_signature")
            if not sig:
                raise Refusal(403, "missing msg_signature")
            if enc is None:
                raise Refusal(400, "malformed encrypted XML")
            # What msg_signature covers, and all that is read: a plaintext copy beside it is ignored.
            signed_part = enc.encode()
            try:
                xml = self.crypto.decrypt_message({"Encrypt": enc}, sig, ts, nonce)
            except InvalidSignatureException:
                raise Refusal(403, "bad msg_signature") from None
            except InvalidAppIdException:
                raise Refusal(403, "appid in the encrypted message does not match") from None
            except _PARSE_ERRORS:
                raise Refusal(400, "malformed encrypted XML") from None
            except Exception:
                raise Refusal(400, "undecryptable message") from None
        else:
            if self.mode == "safe":
                # The URL signature does not cover the body: accepting this would let one captured URL
                # carry any message as any user (a staff openid included).
                raise Refusal(403, "unencrypted callback refused in safe mode")
            sig = q.get("signature")
            if not sig:
                raise Refusal(403, "missing signature")
            try:
                check_signature(self.cfg.wechat.token, sig, ts, nonce)
            except InvalidSignatureException:
                raise Refusal(403, "bad signature") from None
            xml = body.decode("utf-8", errors="replace")
            signed_part = body
        if not xml.strip():
            raise Refusal(400, "empty body")
        if encrypted and has_dtd(xml.encode("utf-8", errors="replace")):
            raise Refusal(400, "XML with DTD or entity declarations")
        try:
            msg = parse_message(xml)
        except (ExpatError, ValueError):
            raise Refusal(400, "malformed XML") from None
        except (KeyError, TypeError, AttributeError, IndexError):
            # Well-formed XML that is not a message we know (no MsgType…): acknowledge, do nothing.
            log.info("ignored well-formed XML that is not a message")
            return web.Response(text=SUCCESS)
        try:
            if msg is None or not getattr(msg, "source", None):
                log.info("ignored XML without FromUserName")
                return web.Response(text=SUCCESS)
            inbound = to_inbound(msg)
            if inbound is None:
                return web.Response(text=SUCCESS)
            openid, key = str(msg.source), dedup_key(msg)
        except Exception as e:
            # A field wechatpy cannot read (it converts lazily, on access): the sender's fault, not a 500.
            # Where it failed is logged (a bug of ours would show here), never the exception's text,
            # which may quote the message.
            tb = traceback.extract_tb(e.__traceback__)
            where = f"{tb[-1].filename}:{tb[-1].lineno}" if tb else "?"
            log.warning("unreadable message fields: %s at %s", type(e).__name__, where)
            raise Refusal(400, f"message fields that cannot be read ({type(e).__name__})") from None
        # Authenticated (URL or ciphertext) and readable: now the pair may be remembered. Earlier an
        # outsider could fill the memory, or pre-empt a genuine callback's pair.
        # The pair is bound to what its signature authenticated: the body of a plain callback, the
        # ciphertext of an encrypted one.
        if self._memory is not None:
            fresh: bool | None = self._memory.seen_ok(when, nonce, signed_part)
        else:
            fresh = await self._check_pair(when, nonce, signed_part)
        if fresh is False:
            raise Refusal(403, "timestamp and nonce already used with another body")
        # None: the shared memory is unreachable (database down); the turn would fail the same way.
        reply = await self._run(openid, inbound, key) if fresh else BUSY_TEXT
        if not reply:
            return web.Response(text=SUCCESS)
        out = create_reply(reply, msg).render()
        if encrypted:
            assert self.crypto is not None
            out = self.crypto.encrypt_message(out, nonce, ts)
        return web.Response(text=out, content_type="application/xml")

    async def _check_pair(self, when: int, nonce: str, body: bytes) -> bool | None:
        """The shared pair memory's verdict; None when the database cannot be asked (fail closed:
        without it a reused URL cannot be told from a new one)."""
        try:
            return await self.replay.check(when, nonce, body)
        except (DatabaseUnavailable, SQLAlchemyError, OSError) as e:
            log.error("replay check failed, database problem: %s", type(e).__name__)
            return None

    async def _run(self, openid: str, inbound: Inbound, key: str) -> str | None:
        control = TurnControl()
        task = self.dispatcher.start(openid, inbound, key, control)
        if not await _done_within(task, self.cfg.server.reply_budget_s):
            if control.decided:
                # The turn is committing its passive reply: let it finish rather than lose it.
                return await self._guard(task)
            control.late = True
            self._background.add(task)
            task.add_done_callback(self._late_done)
            log.info("turn over budget; reply goes through the outbox")
            return None
        try:
            return task.result()
        except (DatabaseUnavailable, SQLAlchemyError, OSError) as e:
            log.error("turn failed, database problem: %s", type(e).__name__)
            return BUSY_TEXT
        except Exception:
            log.exception("turn failed")
            return BUSY_TEXT

    async def _guard(self, task: asyncio.Future[str | None]) -> str | None:
        try:
            return await task
        except Exception:
            log.exception("turn failed")
            return BUSY_TEXT

    def _late_done(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("late turn failed: %r", task.exception())
