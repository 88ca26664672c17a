"""What WeChat's servers do to our callback, for `vetbot chat`, tests and benchmarks.

Builds real message/event XML, signs it (plaintext mode) or encrypts and signs it (safe mode), and
decrypts/parses the reply, exactly as the platform does.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import secrets
import time
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import xmltodict
from wechatpy.crypto import WeChatCrypto

from bot.config import Config

_msgid = itertools.count(int(time.time() * 1000) * 1000 + random.randint(0, 999))


def signature(token: str, *parts: str) -> str:
    """WeChat's signature: sha1 of the sorted, concatenated parts."""
    return hashlib.sha1("".join(sorted([token, *parts])).encode()).hexdigest()


def text_xml(openid: str, content: str, *, to: str = "gh_vetbot", msg_id: int | None = None,
             create_time: int | None = None) -> str:
    return (
        f"<xml><ToUserName><![CDATA[{to}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{create_time or int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{content.replace(']]>', ']]&gt;')}]]></Content>"
        f"<MsgId>{msg_id or next(_msgid)}</MsgId></xml>"
    )


def event_xml(openid: str, event: str, key: str | None = None, *, to: str = "gh_vetbot",
              create_time: int | None = None, extra: dict[str, Any] | None = None) -> str:
    parts = [
        f"<xml><ToUserName><![CDATA[{to}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>",
        f"<CreateTime>{create_time or int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>",
        f"<Event><![CDATA[{event}]]></Event>",
    ]
    if key is not None:
        parts.append(f"<EventKey><![CDATA[{key}]]></EventKey>")
    for k, v in (extra or {}).items():
        parts.append(f"<{k}>{escape(str(v))}</{k}>")
    parts.append("</xml>")
    return "".join(parts)


def voice_xml(openid: str, media_id: str, *, fmt: str = "amr", recognition: str | None = None,
              to: str = "gh_vetbot", msg_id: int | None = None, create_time: int | None = None) -> str:
    """A voice message; ``recognition`` is WeChat's own transcript (absent for many accounts today)."""
    rec = "" if recognition is None else f"<Recognition><![CDATA[{recognition}]]></Recognition>"
    return (
        f"<xml><ToUserName><![CDATA[{to}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{create_time or int(time.time())}</CreateTime><MsgType><![CDATA[voice]]></MsgType>"
        f"<MediaId><![CDATA[{media_id}]]></MediaId><Format><![CDATA[{fmt}]]></Format>{rec}"
        f"<MsgId>{msg_id or next(_msgid)}</MsgId></xml>"
    )


#: The wrapper element of each 订阅通知 event, as WeChat sends it.
SUBSCRIBE_EVENT_TAGS = {"subscribe_msg_popup_event": "SubscribeMsgPopupEvent",
                        "subscribe_msg_change_event": "SubscribeMsgChangeEvent",
                        "subscribe_msg_sent_event": "SubscribeMsgSentEvent"}


def subscribe_event_xml(openid: str, event: str, items: list[dict[str, Any]], *, to: str = "gh_vetbot",
                        create_time: int | None = None) -> str:
    """A 订阅通知 event: ``items`` are the ``<List>`` entries (``TemplateId``, ``SubscribeStatusString``,
    ``PopupScene`` / ``MsgID``, ``ErrorCode``, ``ErrorStatus``), as in the official samples."""
    tag = SUBSCRIBE_EVENT_TAGS[event]
    lists = "".join("<List>" + "".join(f"<{k}><![CDATA[{v}]]></{k}>" if not str(v).isdigit() else f"<{k}>{v}</{k}>"
                                       for k, v in item.items()) + "</List>" for item in items)
    return (f"<xml><ToUserName><![CDATA[{to}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{create_time or int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[{event}]]></Event><{tag}>{lists}</{tag}></xml>")


@dataclass
class Signed:
    """A callback ready to POST: query parameters and body."""

    query: dict[str, str]
    body: str
    nonce: str
    timestamp: str


class WeChatSide:
    """Signs callbacks and reads replies for one configured account."""

    def __init__(self, config: Config) -> None:
        self.cfg = config
        w = config.wechat
        self.crypto = WeChatCrypto(w.token, w.encoding_aes_key, w.appid) if w.encoding_aes_key else None

    def sign(self, xml: str, *, timestamp: int | None = None) -> Signed:
        ts = str(timestamp or int(time.time()))
        nonce = secrets.token_hex(5)
        token = self.cfg.wechat.token
        query = {"signature": signature(token, ts, nonce), "timestamp": ts, "nonce": nonce,
                 "openid": _openid_of(xml)}
        if self.crypto is None:
            return Signed(query, xml, nonce, ts)
        enc = self.crypto.encrypt_message(xml, nonce, ts)
        encrypt = xmltodict.parse(enc)["xml"]["Encrypt"]
        query.update(encrypt_type="aes", msg_signature=signature(token, ts, nonce, encrypt))
        return Signed(query, f"<xml><ToUserName><![CDATA[gh_vetbot]]></ToUserName><Encrypt><![CDATA[{encrypt}]]>"
                             f"</Encrypt></xml>", nonce, ts)

    def read_reply(self, body: str) -> dict[str, Any] | None:
        """The reply as a dict (``Content`` for text); None for ``success`` or an empty body."""
        body = body.strip()
        if not body or body == "success":
            return None
        data = xmltodict.parse(body)["xml"]
        if "Encrypt" in data:
            assert self.crypto is not None, "encrypted reply but no key"
            sig = data.get("MsgSignature")
            plain = self.crypto.decrypt_message(body, sig, data.get("TimeStamp"), data.get("Nonce"))
            data = xmltodict.parse(plain)["xml"]
        return dict(data)


def _openid_of(xml: str) -> str:
    start = xml.find("<FromUserName><![CDATA[")
    if start < 0:
        return ""
    start += len("<FromUserName><![CDATA[")
    return xml[start: xml.find("]]>", start)]
