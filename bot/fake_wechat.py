"""A fake WeChat Official Account API server for tests, benchmarks and local demos.

Nothing in the project may call the real ``api.weixin.qq.com`` from a test. This module serves the
subset of the API the bot uses, with the platform's own rules (see ``/work/shared/wechat-facts.md``
and the official ``getStableAccessToken`` page):

* ``POST /cgi-bin/stable_token``: normal mode returns the same token while it has more than
  ``overlap`` (300) seconds left and a new one inside that last window (the platform "renews 5 minutes
  early", so ``expires_in`` is always >= 300); ``force_refresh`` issues a new token, at most
  ``force_refresh_daily_limit`` (20) times a day and not within ``force_refresh_interval`` (30) seconds
  of the previous forced refresh (the platform then silently returns the current token). A new token
  leaves the previous one valid for ``overlap`` seconds more, after which it answers 40001.
* ``GET /cgi-bin/token``: the classic endpoint, a new token on every call. Its tokens form a line of
  their own: the platform isolates classic and stable tokens from each other.
* Every other API wants ``?access_token=``: missing 41001, unknown or superseded 40001, expired 42001.
* Sends check ``touser`` (40003 unless it looks like an openid, see :data:`OPENID_RE`; the demo's
  ``openid_rule: demo`` also takes short ids, :data:`DEMO_OPENID_RE`), follow state (43004 on
  template/subscribe sends; a customer-service send to an unfollowed user answers 45015 as the
  platform does, "response out of time limit or subscription is canceled") and the kefu window
  (45015, and 45047 once a user's ``kefu_quota`` is used up).
* Template messages and 订阅通知 follow WeChat's rules of today (:mod:`bot.template_rules`): a keyword
  value that breaks its type (a malformed ``time``, a ``phrase`` over 5 Chinese characters, a 订阅通知
  ``thing`` over 20, an untyped field in a 订阅通知) is refused with 47003 naming the field; a template
  id the account lacks gets 40037 once templates are registered (``/__fake__/templates``; a fresh fake
  takes any id); ``first``/``remark`` are accepted but not shown. Each accepted send is recorded with a
  ``rendered`` view: the title and fields as the person sees them (20 characters with …, no line
  breaks, no emoji). ``bizsend`` also needs the person's consent for the template (43101 otherwise;
  a one-time consent allows one notice).
* ``GET /cgi-bin/media/get`` serves registered media (and :data:`DEMO_VOICE_MEDIA_ID`, a short AMR
  clip); unknown ids get 40007. ``GET /cgi-bin/ticket/getticket?type=jsapi`` hands out a JS-SDK ticket,
  the same one until its last 5 minutes.
* ``POST /cgi-bin/qrcode/create`` answers like the platform (``{ticket, expire_seconds, url}``; no
  ``expire_seconds`` for the permanent ``QR_LIMIT_*`` kinds; 40097 for a bad action, scene or expiry)
  and remembers each code's scene (``GET /__fake__/qrcodes``).

* OAuth 网页授权: ``GET /connect/oauth2/authorize?appid&redirect_uri&response_type=code&scope=snsapi_base
  &state`` redirects (302) to ``redirect_uri?code=…&state=…`` as WeChat's browser does, for the openid in
  the ``fake_wechat_openid`` cookie or the one set with ``POST /__fake__/oauth {"openid", "domain"}``
  (``domain``: the 网页授权域名 a redirect_uri must be on, as in the console). ``GET
  /sns/oauth2/access_token`` trades a code for ``{access_token, openid, scope…}``: 40029 for an unknown
  or expired code (5 minutes), 40163 for one used before.

API errors come back as HTTP 200 with ``errcode``/``errmsg`` (plus `` rid: ...`` like the real
thing), bodies are UTF-8 JSON with raw Chinese. Every API call is recorded, even when a fault
answers it, so tests can count attempts.

Control endpoints (never recorded as calls):

========================  ====================================================================
``GET  /__fake__/calls``   ``{"calls": [...], "next": n}``; ``?path=`` filter, ``?since=<index>``
``GET  /__fake__/stats``   ``{"total": n, "by_path": {...}, "by_errcode": {...}}``
``POST /__fake__/faults``  one rule or a list: ``{"path", "errcode", "errmsg", "status", "delay_ms",
                           "drop", "body", "count", "probability"}``; ``path`` may be ``"*"``;
                           ``count`` < 0 means until reset. ``DELETE`` clears the rules
``POST /__fake__/users``   ``{"<openid>": {"followed": false, "kefu_window": false, "kefu_quota": 0,
                           "subscribe": {"<template_id>": "accept"}, "accept_subscribe": false (a blanket
                           yes/no), "nickname": ...}}`` (merged into the state)
``POST /__fake__/config``  ``{"latency_ms", "token_ttl", "overlap", "force_refresh_interval",
                           "force_refresh_daily_limit", "appid", "secret", "openid_rule", "ticket_ttl"}``;
                           ``GET`` reads it
``POST /__fake__/clock``   ``{"advance": seconds}`` moves the fake's clock (token expiry without
                           sleeping); ``GET`` reads it
``POST /__fake__/tokens``  ``{"revoke": "<token>" | "all"}`` invalidates tokens now; ``GET`` lists
``POST /__fake__/oauth``   ``{"openid", "domain"}``: who the "browser" is at the authorize page (when no
                           ``fake_wechat_openid`` cookie says), and the 网页授权域名 (``""`` = any)
``POST /__fake__/reset``   clears calls, faults, users, tokens, menu, clientmsgids, consents, media,
                           tickets, QR codes, clock offset (registered templates stay: they are the
                           account's)
``POST /__fake__/templates``  ``{"<id>": {"type": "template" | "subscribe", "title", "fields": {name:
                           label}, "kind": "one_time" | "long_term"}}``; ``GET`` lists them
``POST /__fake__/subscribe``  a person's popup choice ``{"openid", "templates": {"<id>": "accept" |
                           "reject"}, "event": "popup" | "change", "scene"}``: recorded, and the event
                           XML WeChat would send the bot is returned (``{"xml"}``); ``GET`` lists consents
``POST /__fake__/media``   ``{"media_id", "base64", "content_type"}`` registers a media file
``POST /__fake__/jssdk/verify``  ``{"url", "nonceStr", "timestamp", "signature"}``: checks a ``wx.config``
                           signature against the tickets issued, as WeChat's client does
``GET  /__fake__/qrcodes`` ``{"qrcodes": [{"ticket", "url", "scene", "action_name", "expire_seconds",
                           "created_at"}, ...]}`` (``?url=`` filter): what a phone scanning the code
                           would learn, so a test can send the matching SCAN event
========================  ====================================================================

Use it in-process with :class:`FakeWeChatServer` (``async with FakeWeChatServer() as fake:``) or as a
separate process with ``vetbot fake-wechat --port 8081``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import re
import secrets
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiohttp import web
from yarl import URL

from bot.template_rules import DEFAULT_RULES, check, display, field_kind

__all__ = [
    "DEFAULT_APPID",
    "DEMO_OPENID_RE",
    "DEMO_VOICE_MEDIA_ID",
    "ERRMSG",
    "OPENID_RE",
    "FakeWeChat",
    "FakeWeChatServer",
    "FaultRule",
    "create_app",
    "fake_openid",
    "templates_of",
]

DEFAULT_APPID = "wx0000000000000000"

#: What the fake accepts as an openid. Real openids are 28 characters of ``[A-Za-z0-9_-]`` (most start
#: with ``o``); the fake accepts 16-64 so that names, phone numbers, e-mail addresses, Chinese text and
#: empty strings are refused with 40003 while hand-written test ids stay easy. See :func:`fake_openid`.
OPENID_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
#: The ``openid_rule: demo`` of the local demo (``vetbot serve --with-fake-wechat``): the short, readable ids
#: of the README and the conversation scripts (``my_openid``, ``staff_demo``) pass; Chinese text, spaces,
#: empty strings and bare phone numbers (11 digits) still get 40003.
DEMO_OPENID_RE = re.compile(r"^(?!1\d{10}$)[A-Za-z0-9_-]{1,64}$")
#: A voice message's media id every fake knows (``GET /cgi-bin/media/get`` serves a short AMR clip).
DEMO_VOICE_MEDIA_ID = "vetbot_demo_voice_media_0001"
#: A short AMR-NB file: the magic header and a few silent 12.2 kbit/s frames (32 bytes each).
DEMO_AMR = b"#!AMR\n" + (b"\x3c" + b"\x00" * 31) * 25

#: errmsg texts as the platform writes them (a `` rid: ...`` suffix is appended to errors).
ERRMSG: dict[int, str] = {
    -1: "system error",
    0: "ok",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40007: "invalid media_id",
    40008: "invalid message type",
    40013: "invalid appid",
    40014: "invalid access_token",
    40016: "invalid button size",
    40017: "invalid button type",
    40018: "invalid button name size",
    40019: "invalid button key size",
    40020: "invalid button url size",
    40023: "invalid sub button size",
    40024: "invalid sub button type",
    40025: "invalid sub button name size",
    40026: "invalid sub button key size",
    40027: "invalid sub button url size",
    40037: "invalid template_id",
    40097: "invalid args",
    40125: "invalid appsecret",
    40029: "invalid code",
    40163: "code been used",
    40164: "invalid ip, not in whitelist",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    42001: "access_token expired",
    43001: "require GET method",
    43002: "require POST method",
    43004: "require subscribe",
    43101: "user refuse to accept the msg",
    44002: "empty post data",
    44004: "empty content",
    45008: "article size out of limit",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit  mustslower  retry next minute",
    45015: "response out of time limit or subscription is canceled",
    45047: "out of response count limit",
    45065: "clientmsgid exist",
    47001: "data format error",
    47003: "argument invalid!",
    48001: "api unauthorized",
}

_MENU_TYPES = frozenset({
    "click", "view", "scancode_push", "scancode_waitmsg", "pic_sysphoto", "pic_photo_or_album",
    "pic_weixin", "location_select", "media_id", "view_limited", "article_id", "article_view_limited",
    "miniprogram",
})
_MENU_KEY_TYPES = frozenset({
    "click", "scancode_push", "scancode_waitmsg", "pic_sysphoto", "pic_photo_or_album", "pic_weixin",
    "location_select",
})
_CUSTOM_MSGTYPES = frozenset({
    "text", "image", "voice", "video", "music", "news", "mpnews", "mpnewsarticle", "msgmenu", "wxcard",
    "miniprogrampage",
})
_MASS_MSGTYPES = frozenset({"text", "mpnews", "voice", "image", "mpvideo", "wxcard"})

_dumps = partial(json.dumps, ensure_ascii=False)

Handler = Callable[[Any, dict[str, str]], dict[str, Any] | Awaitable[dict[str, Any]]]


def fake_openid(n: int | str = 0) -> str:
    """A deterministic, realistic 28-character openid for tests and benchmarks (``fake_openid(7)``)."""
    tail = str(n)
    return "o" + "FakeVetbotUser_" + tail.rjust(12, "0")[-12:]


def templates_of(config: Any) -> dict[str, dict[str, Any]]:
    """The templates a vetbot config uses, in the form of :meth:`FakeWeChat.add_templates` (the demo and
    the tests register them, so the fake refuses every other id with 40037 as the platform does)."""
    out: dict[str, dict[str, Any]] = {}
    for spec in config.templates.values():
        if spec.template_id:
            labels = {name: spec.labels.get(name, name) for name in spec.fields}
            out[spec.template_id] = {"type": "template", "title": spec.title, "fields": labels}
        sub = spec.subscribe
        if sub is not None and sub.template_id:
            names = sub.fields or spec.fields
            labels = {name: (sub.labels or spec.labels).get(name, name) for name in names}
            out[sub.template_id] = {"type": "subscribe", "title": sub.title or spec.title, "fields": labels,
                                    "kind": sub.kind}
    return out


def _error(errcode: int, errmsg: str | None = None) -> dict[str, Any]:
    msg = errmsg if errmsg is not None else ERRMSG.get(errcode, "fault injected")
    if errcode != 0:
        msg = f"{msg} rid: {uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:8]}"
    return {"errcode": errcode, "errmsg": msg}


_OK: dict[str, Any] = {"errcode": 0, "errmsg": "ok"}


@dataclass
class FaultRule:
    """One fault injected for the next ``count`` calls of ``path`` (``"*"`` = any API path).

    ``delay_ms`` sleeps first; then ``drop`` closes the connection without an answer, ``body`` is
    served verbatim (a dict/list as JSON, a string as text), ``errcode`` gives a WeChat error body,
    and ``status`` sets the HTTP status (a non-200 status with no body gives an HTML error page like
    a gateway would). A rule with only ``delay_ms`` delays the call and then answers normally.
    ``count`` < 0 keeps the rule until reset; ``probability`` < 1 applies it to a random share of calls.
    """

    path: str
    errcode: int | None = None
    errmsg: str | None = None
    status: int = 200
    delay_ms: float = 0
    drop: bool = False
    body: Any = None
    count: int = 1
    probability: float = 1.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultRule:
        """Validate and build a rule from the control endpoint's JSON."""
        if not isinstance(data, dict) or not isinstance(data.get("path"), str) or not data["path"]:
            raise ValueError("a fault rule needs a 'path'")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        rule = cls(**data)
        if rule.errcode is not None:
            rule.errcode = int(rule.errcode)
        rule.status = int(rule.status)
        rule.count = int(rule.count)
        rule.delay_ms = float(rule.delay_ms)
        rule.probability = float(rule.probability)
        if rule.count == 0:
            raise ValueError("count must not be 0")
        if not 0 < rule.probability <= 1:
            raise ValueError("probability must be in (0, 1]")
        if not 100 <= rule.status <= 599:
            raise ValueError("status must be an HTTP status")
        return rule

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def answers(self) -> bool:
        """Whether the rule produces the response itself (otherwise it only delays)."""
        return self.drop or self.body is not None or self.errcode is not None or self.status != 200


@dataclass
class _Token:
    value: str
    kind: str  # "stable" or "classic": the platform keeps the two lines apart
    issued_at: float
    expires_at: float
    valid_until: float  # == expires_at unless superseded or revoked

    @property
    def cut_short(self) -> bool:
        return self.valid_until < self.expires_at


@dataclass
class FakeWeChat:
    """State of the fake platform: tokens, users, recorded calls, fault rules and configuration.

    ``clock`` gives the platform's time (token expiry, ``at`` of calls, 24 h clientmsgid dedup);
    tests may pass their own clock or move it with :meth:`advance_clock`.
    """

    appid: str = DEFAULT_APPID
    secret: str | None = None
    latency_ms: float = 0
    token_ttl: int = 7200
    overlap: int = 300
    force_refresh_interval: float = 30
    force_refresh_daily_limit: int | None = 20
    clock: Callable[[], float] = time.time
    calls: list[dict[str, Any]] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)
    errcodes: Counter[str] = field(default_factory=Counter)
    faults: dict[str, deque[FaultRule]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, _Token] = field(default_factory=dict)
    current: dict[str, _Token] = field(default_factory=dict)
    menu: dict[str, Any] | None = None
    clientmsgids: dict[str, tuple[float, int, int]] = field(default_factory=dict)
    qrcodes: list[dict[str, Any]] = field(default_factory=list)
    clock_offset: float = 0.0
    #: "strict": openids of 16-64 letters, digits, _ or - (:data:`OPENID_RE`); "demo": the short ids of the
    #: local demo too (:data:`DEMO_OPENID_RE`). A fake-only setting: the real platform has its own ids.
    openid_rule: str = "strict"
    #: The account's templates, as added in the console: id -> {"type": "template" | "subscribe",
    #: "title", "fields": {name: label}, "kind": "one_time" | "long_term" (订阅通知)}. While none is
    #: registered any id is accepted (a fresh fake); once some are, other ids get 40037.
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: 订阅通知 consent the platform knows of: (openid, template_id) -> {"status", "kind", "remaining"}.
    consents: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: Temporary media: media_id -> (bytes, content type). The demo voice clip is always there.
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    #: JS-SDK tickets handed out: ticket -> valid until (fake clock).
    tickets: dict[str, float] = field(default_factory=dict)
    ticket_ttl: int = 7200
    #: OAuth 网页授权: the openid the "browser" is when no ``fake_wechat_openid`` cookie says otherwise
    #: (``POST /__fake__/oauth {"openid"}``), the 网页授权域名 a redirect_uri must be on ("" = any host), and
    #: the codes handed out: code -> (openid, issued at, used).
    oauth_openid: str = ""
    oauth_domain: str = ""
    oauth_codes: dict[str, list[Any]] = field(default_factory=dict)
    oauth_code_ttl: int = 300
    _last_force_at: float | None = None
    _forces_by_day: Counter[int] = field(default_factory=Counter)
    _msgid: int = 2_000_000_000

    # -- OAuth 网页授权 --------------------------------------------------------------------------
    def oauth_code(self, openid: str) -> str:
        """A new code for ``openid`` (what WeChat appends to the redirect): single use, 5 minutes."""
        code = secrets.token_hex(16)
        self.oauth_codes[code] = [openid, self.now(), False]
        return code

    def oauth_exchange(self, code: Any) -> dict[str, Any]:
        """``sns/oauth2/access_token`` for ``code``: 40029 unknown or expired, 40163 used before."""
        found = self.oauth_codes.get(code) if isinstance(code, str) else None
        if found is None or self.now() - found[1] > self.oauth_code_ttl:
            return _error(40029)
        if found[2]:
            return _error(40163)
        found[2] = True
        return {"access_token": "oauth_" + secrets.token_hex(12), "expires_in": 7200,
                "refresh_token": "rt_" + secrets.token_hex(12), "openid": found[0], "scope": "snsapi_base"}

    # -- time -----------------------------------------------------------------------------------
    def now(self) -> float:
        """The fake platform's current time (``clock()`` plus the offset set by ``/__fake__/clock``)."""
        return self.clock() + self.clock_offset

    def advance_clock(self, seconds: float) -> float:
        """Move the platform's time forward (tokens expire, dedup windows pass) without sleeping."""
        self.clock_offset += float(seconds)
        return self.now()

    def reset(self) -> None:
        """Forget calls, faults, users, tokens, the menu, clientmsgids and the clock offset."""
        self.calls.clear()
        self.stats.clear()
        self.errcodes.clear()
        self.faults.clear()
        self.users.clear()
        self.tokens.clear()
        self.current.clear()
        self.menu = None
        self.clientmsgids.clear()
        self.consents.clear()
        self.media.clear()
        self.tickets.clear()
        self.qrcodes.clear()
        self.oauth_codes.clear()
        self.oauth_openid = ""
        self.clock_offset = 0.0
        self._last_force_at = None
        self._forces_by_day.clear()

    def _next_msgid(self) -> int:
        self._msgid += 1
        return self._msgid

    # -- faults ---------------------------------------------------------------------------------
    def add_fault(self, rule: FaultRule) -> None:
        """Queue a fault rule (rules for one path apply in the order they were added)."""
        self.faults.setdefault(rule.path, deque()).append(rule)

    def take_fault(self, path: str) -> FaultRule | None:
        """The rule that answers this call of ``path``, consuming one of its ``count``."""
        for key in (path, "*"):
            rules = self.faults.get(key)
            if not rules:
                continue
            rule = rules[0]
            if rule.probability < 1 and random.random() >= rule.probability:
                continue
            if rule.count > 0:
                rule.count -= 1
                if rule.count == 0:
                    rules.popleft()
            return rule
        return None

    # -- users ----------------------------------------------------------------------------------
    def user(self, openid: str) -> dict[str, Any]:
        """The state of one user: followed and kefu window open unless set otherwise."""
        return self.users.get(openid, {})

    def set_users(self, users: dict[str, dict[str, Any]]) -> None:
        """Merge per-user state (``followed``, ``kefu_window``, ``kefu_quota``, ``accept_subscribe``, profile).

        ``subscribe: {"<template_id>": "accept" | "reject" | {"status", "remaining"}}`` records 订阅通知
        consent (as :meth:`subscribe_choice` does)."""
        for openid, fields in users.items():
            if not isinstance(fields, dict):
                raise ValueError(f"state of {openid!r} must be an object")
            fields = dict(fields)
            subs = fields.pop("subscribe", None)
            if subs is not None:
                if not isinstance(subs, dict):
                    raise ValueError('subscribe must be {"<template_id>": "accept" | "reject" | {...}}')
                for tid, choice in subs.items():
                    if isinstance(choice, dict):
                        self.subscribe_choice(openid, tid, str(choice.get("status", "accept")),
                                              remaining=choice.get("remaining"))
                    else:
                        self.subscribe_choice(openid, tid, str(choice))
            self.users.setdefault(openid, {}).update(fields)

    # -- 订阅通知 consent, templates, media --------------------------------------------------------
    def template_kind(self, template_id: str) -> str:
        """``one_time`` or ``long_term`` for a 订阅通知 template (one_time unless registered otherwise)."""
        return str(self.templates.get(template_id, {}).get("kind") or "one_time")

    def subscribe_choice(self, openid: str, template_id: str, status: str, *, remaining: Any = None) -> None:
        """A person accepted or rejected a 订阅通知 template (popup), or turned it off (change event).

        A one-time acceptance allows one more notice; a long-term one allows notices until rejected."""
        if status not in ("accept", "reject"):
            raise ValueError("status must be accept or reject")
        key = (openid, template_id)
        kind = self.template_kind(template_id)
        cur = self.consents.get(key)
        if status == "reject":
            self.consents[key] = {"status": "reject", "kind": kind, "remaining": 0}
            return
        left = int(remaining) if remaining is not None else (
            (cur["remaining"] if cur and cur["status"] == "accept" else 0) + 1)
        self.consents[key] = {"status": "accept", "kind": kind, "remaining": left}

    def spend_consent(self, openid: str, template_id: str) -> bool:
        """Whether a notice may go out (and spend a one-time consent)."""
        user = self.user(openid)
        if "accept_subscribe" in user:  # a blanket yes/no set through /__fake__/users
            return bool(user["accept_subscribe"])
        c = self.consents.get((openid, template_id))
        if c is None or c["status"] != "accept":
            return False
        if c["kind"] == "long_term":
            return True
        if c["remaining"] <= 0:
            return False
        c["remaining"] -= 1
        return True

    def add_templates(self, templates: dict[str, dict[str, Any]]) -> None:
        """Register templates as if added in the console (see :attr:`templates`)."""
        for tid, spec in templates.items():
            if not isinstance(spec, dict) or spec.get("type", "template") not in ("template", "subscribe"):
                raise ValueError(f"template {tid!r}: needs type template or subscribe")
            if spec.get("kind", "one_time") not in ("one_time", "long_term"):
                raise ValueError(f"template {tid!r}: kind must be one_time or long_term")
            self.templates[str(tid)] = {"type": spec.get("type", "template"), "title": spec.get("title", ""),
                                        "fields": dict(spec.get("fields") or {}),
                                        "kind": spec.get("kind", "one_time")}

    def known_template(self, template_id: str, type_: str) -> bool:
        """Whether ``template_id`` is an account template of ``type_`` (any id while none is registered)."""
        if not self.templates:
            return True
        spec = self.templates.get(template_id)
        return spec is not None and spec["type"] == type_

    def get_media(self, media_id: str) -> tuple[bytes, str] | None:
        if media_id == DEMO_VOICE_MEDIA_ID:
            return DEMO_AMR, "audio/amr"
        return self.media.get(media_id)

    def jsapi_ticket(self) -> dict[str, Any]:
        """The current JS-SDK ticket (a new one once it expired)."""
        now = self.now()
        for value, until in self.tickets.items():
            if until - now > self.overlap:  # like tokens: renewed in the last 5 minutes
                return {"errcode": 0, "errmsg": "ok", "ticket": value, "expires_in": int(until - now)}
        value = secrets.token_urlsafe(64)
        self.tickets[value] = now + self.ticket_ttl
        return {"errcode": 0, "errmsg": "ok", "ticket": value, "expires_in": self.ticket_ttl}

    def verify_jssdk(self, url: str, noncestr: str, timestamp: str, signature: str) -> str | None:
        """What WeChat's client checks in ``wx.config``: None when the signature matches a valid ticket
        for ``url`` (without its #fragment), else the reason."""
        now = self.now()
        base = url.split("#", 1)[0]
        for ticket, until in self.tickets.items():
            if until <= now:
                continue
            raw = f"jsapi_ticket={ticket}&noncestr={noncestr}&timestamp={timestamp}&url={base}"
            if hashlib.sha1(raw.encode("utf-8")).hexdigest() == signature:
                return None
        return "invalid signature" if self.tickets else "no ticket issued"

    def openid_ok(self, value: Any) -> bool:
        """Whether ``value`` is an openid the fake accepts under :attr:`openid_rule`."""
        rule = DEMO_OPENID_RE if self.openid_rule == "demo" else OPENID_RE
        return isinstance(value, str) and rule.match(value) is not None

    # -- tokens ---------------------------------------------------------------------------------
    def _issue(self, kind: str) -> _Token:
        now = self.now()
        old = self.current.get(kind)
        if old is not None:
            old.valid_until = min(old.valid_until, now + self.overlap)
        value = f"{len(self.tokens) + 1:04d}_" + secrets.token_urlsafe(96)
        tok = _Token(value, kind, now, now + self.token_ttl, now + self.token_ttl)
        self.tokens[value] = tok
        self.current[kind] = tok
        return tok

    def _token_body(self, tok: _Token) -> dict[str, Any]:
        return {"access_token": tok.value, "expires_in": max(int(tok.valid_until - self.now()), 0)}

    def stable_token(self, force: bool) -> dict[str, Any]:
        """The ``stable_token`` rules: reuse, renewal in the last ``overlap`` seconds, forced refresh."""
        now = self.now()
        cur = self.current.get("stable")
        usable = cur is not None and now < cur.valid_until and not cur.cut_short
        if force and usable and self._last_force_at is not None and now - self._last_force_at < self.force_refresh_interval:
            return self._token_body(cur)  # the platform ignores forced refreshes less than 30 s apart
        if force:
            day = int((now + 8 * 3600) // 86400)  # quota days are Beijing days
            limit = self.force_refresh_daily_limit
            if limit is not None and self._forces_by_day[day] >= limit:
                return _error(45009)
            self._forces_by_day[day] += 1
            self._last_force_at = now
            return self._token_body(self._issue("stable"))
        if usable and cur.expires_at - now > self.overlap:
            return self._token_body(cur)
        return self._token_body(self._issue("stable"))

    def check_token(self, value: str | None) -> dict[str, Any] | None:
        """None when ``value`` is a valid token, else the platform's error body."""
        if not value:
            return _error(41001)
        tok = self.tokens.get(value)
        if tok is None:
            return _error(40001)
        if self.now() >= tok.valid_until:
            return _error(40001 if tok.cut_short else 42001)
        return None

    def revoke(self, which: str) -> int:
        """Invalidate one token (by value) or ``"all"`` right now; returns how many were revoked."""
        now = self.now()
        targets = list(self.tokens.values()) if which == "all" else [self.tokens[which]] if which in self.tokens else []
        for tok in targets:
            tok.valid_until = min(tok.valid_until, now)
        return len(targets)

    def config(self) -> dict[str, Any]:
        """The tunable settings, as ``GET /__fake__/config`` shows them."""
        return {
            "appid": self.appid,
            "secret": self.secret,
            "latency_ms": self.latency_ms,
            "token_ttl": self.token_ttl,
            "overlap": self.overlap,
            "force_refresh_interval": self.force_refresh_interval,
            "force_refresh_daily_limit": self.force_refresh_daily_limit,
            "openid_rule": self.openid_rule,
            "ticket_ttl": self.ticket_ttl,
        }

    def configure(self, settings: dict[str, Any]) -> None:
        """Change settings (same keys as :meth:`config`)."""
        unknown = set(settings) - set(self.config())
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        casts: dict[str, Callable[[Any], Any]] = {
            "latency_ms": float, "token_ttl": int, "overlap": int, "force_refresh_interval": float,
            "ticket_ttl": int,
        }
        if settings.get("openid_rule", "strict") not in ("strict", "demo"):
            raise ValueError("openid_rule must be strict or demo")
        for key, value in settings.items():
            if key in casts:
                value = casts[key](value)
            elif key == "force_refresh_daily_limit" and value is not None:
                value = int(value)
            setattr(self, key, value)


# ---------------------------------------------------------------------------------------------------
# API handlers: (body, query) -> response dict. Bodies that fail to parse arrive as the _BAD marker.
# ---------------------------------------------------------------------------------------------------

_BAD = object()
_EMPTY = object()


def _need_object(body: Any) -> dict[str, Any] | None:
    if body is _EMPTY:
        return _error(44002)
    if body is _BAD or not isinstance(body, dict):
        return _error(47001)
    return None


class _Api:
    def __init__(self, state: FakeWeChat) -> None:
        self.s = state

    # tokens
    def stable_token(self, body: Any, query: dict[str, str]) -> dict[str, Any]:
        err = _need_object(body)
        if err:
            return err
        if body.get("grant_type") != "client_credential":
            return _error(40002)
        check = self._check_credentials(body.get("appid"), body.get("secret"))
        if check:
            return check
        force = body.get("force_refresh", False)
        if not isinstance(force, bool):
            return _error(47001)
        return self.s.stable_token(force)

    def classic_token(self, body: Any, query: dict[str, str]) -> dict[str, Any]:
        if query.get("grant_type") != "client_credential":
            return _error(40002)
        check = self._check_credentials(query.get("appid"), query.get("secret"))
        if check:
            return check
        return self.s._token_body(self.s._issue("classic"))

    def oauth_access_token(self, body: Any, query: dict[str, str]) -> dict[str, Any]:
        """OAuth 网页授权's code exchange: appid and AppSecret checked like a token request, then the code
        (40029 unknown or older than 5 minutes, 40163 already used)."""
        if query.get("grant_type") != "authorization_code":
            return _error(40002)
        check = self._check_credentials(query.get("appid"), query.get("secret"))
        if check:
            return check
        if not query.get("code"):
            return _error(41008, "missing code")
        return self.s.oauth_exchange(query.get("code"))

    def _check_credentials(self, appid: Any, secret: Any) -> dict[str, Any] | None:
        if not appid:
            return _error(41002)
        if appid != self.s.appid:
            return _error(40013)
        if not secret:
            return _error(41004)
        if self.s.secret is not None and secret != self.s.secret:
            return _error(40125)
        return None

    # messages
    def _recipient(self, body: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
        touser = body.get("touser")
        if not self.s.openid_ok(touser):
            return None, _error(40003)
        return touser, None

    def custom_send(self, body: Any, query: dict[str, str]) -> dict[str, Any]:
        err = _need_object(body)
        if err:
            return err
        touser, err = self._recipient(body)
        if err:
            return err
        msgtype = body.get("msgtype")
        if msgtype not in _CUSTOM_MSGTYPES or not isinstance(body.get(msgtype), dict):
            return _error(40008)
        payload = body[msgtype]
        if msgtype == "text" and not str(payload.get("content") or "").strip():
            return _error(44004)
        if msgtype == "news":
            articles = payload.get("articles")
            if not isinstance(articles, list) or not articles:
                return _error(47001)
            if len(articles) > 1:  # the platform allows one article per customer-service news message
                return _error(45008)
        user = self.s.user(touser)
        if not user.get("followed", True) or not user.get("kefu_window", True):
            return _error(45015)
        quota = user.get("kefu_quota")
        if quota is not None:
            if int(quota) <= 0:
                return _error(45047)
            user["kefu_quota"] = int(quota) - 1
        return dict(_OK)

    def _data(self, body: dict[str, Any], *, subscribe: bool) -> tuple[dict[str, str], dict[str, Any] | None]:
        """The ``data`` values, or the platform's error: 47001 for a malformed ``data``, 47003 (naming the
        field, as the platform's errmsg does) for a value that breaks its keyword type's rule."""
        data = body.get("data", {} if not subscribe else None)
        if not isinstance(data, dict) or (subscribe and not data):
            return {}, _error(47001)
        values: dict[str, str] = {}
        for name, item in data.items():
            value = item.get("value") if isinstance(item, dict) else None
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                return {}, _error(47003, f"argument invalid! data.{name}.value is emtpy")
            value = str(value)
            kind = field_kind(name)
            if kind is None:
                if subscribe or (name not in ("first", "remark") and not name.startswith("keyword")):
                    # 订阅通知 and category templates know only typed keyword fields.
                    return {}, _error(47003, f"argument invalid! data.{name}.value invalid")
            else:
                why = check(kind, value, DEFAULT_RULES, subscribe=subscribe)
                if why is not None:
                    return {}, _error(47003, f"argument invalid! data.{name}.value invalid")
            values[name] = value
        return values, None

    def _rendered(self, template_id: str, values: dict[str, str], link: str | None) -> dict[str, Any]:
        """What the person sees: the template's title, its keyword fields in order (label, the value
        without line breaks and emoji, cut to 20 characters with …), never ``first``/``remark``."""
        spec = self.s.templates.get(template_id, {})
        labels = spec.get("fields") or {}
        order = list(labels) + [n for n in values if n not in labels]
        fields = []
        for name in order:
            if name not in values:
                continue
            shown = display(name, values[name])
            if shown is None:
                continue
            fields.append({"name": name, "label": labels.get(name, name), "value": shown})
        return {"title": spec.get("title", ""), "fields": fields, "url": link or None,
                "hidden": sorted(n for n in values if display(n, values[n]) is None)}

    def template_send(self, body: Any, query: dict[str, str]) -> dict[str, Any]:
        err = _need_object(body)
        if err:
            return err
        touser, err = self._recipient(body)
        if err:
            return err
        tid = body.get("template_id")
        if not isinstance(tid, str) or not tid or not self.s.known_template(tid, "template"):
            return _error(40037)
        if not isinstance(body.get("url", ""), str):
            return _error(47001)
        values, err = self._data(body, subscribe=False)
        if err:
            return err
        if not self.s.user(touser).get("followed", True):
            return _error(43004)
        return {"errcode": 0, "errmsg": "ok", "msgid": self.s._next_msgid(),
                "_rendered": self._rendered(tid, values, body.get("url"))}

    def subscribe_send(self, body: Any, query: dict[str, str]) -> dict[str, Any]:
        err = _need_object(body)
        if err:
            return err
        touser, err = self._recipient(body)
        if err:
            return err
        tid = body.get("template_id")
        if not isinstance(tid, str) or not tid or not self.s.known_template(tid, "subscribe"):
            return _error(40037)
        page = body.get("page")
        if page is not None and (not isinstance(page, str) or not re.match(r"^https?://[^\s]+$", page)):
            return _error(47003, "argument invalid! page invalid")
        values, err = self._data(body, subscribe=True)
        if err:
            return err
        user = self.s.user(touser)
        if not user.get("followed", True):
            return _error(43004)
        if not self.s.spend_consent(touser, tid):
            return _error(43101)
        return {"errcode": 0, "errmsg": "ok", "_rendered": self._rendered(tid, values, page)}

    def media_get(self, body: Any, query: dict[str, str]) -> dict[str, Any]:
        media = self.s.get_media(query.get("media_id", ""))
        if media is None:
            return _error(40007)
        return {"_file": media, "_name": query.get("media_id", "")}

    def getticket(self, body: Any, query: dict[str, str]) -> dict[str, Any]:
        if query.get("type") not in ("jsapi", "wx_card"):
            return _error(40097)
        return self.s.jsapi_ticket()

    def mass_sendall(self, body: Any, query: dict[str, str]) -> dict[str, Any]:
        err = _need_object(body)
        if err:
            return err
        flt = body.get("filter")
        if not isinstance(flt, dict) or (not flt.get("is_to_all") and flt.get("tag_id") is None):
            return _error(47001)
        msgtype = body.get("msgtype")
        if msgtype not in _MASS_MSGTYPES or not isinstance(body.get(msgtype), dict):
            return _error(40008)
        if msgtype == "text" and not str(body[msgtype].get("content") or "").strip():
            return _error(44004)
        now = self.s.now()
        client_id = body.get("clientmsgid")
        if client_id is not None:
            seen = self.s.clientmsgids.get(str(client_id))
            if seen is not None and now - seen[0] < 86400:
                out = _error(45065)
                out.update(msg_id=seen[1], msg_data_id=seen[2])
                return out
        msg_id, data_id = self.s._next_msgid(), self.s._next_msgid()
        if client_id is not None:
            self.s.clientmsgids[str(client_id)] = (now, msg_id, data_id)
        return {"errcode": 0, "errmsg": "send job submission success", "msg_id": msg_id, "msg_data_id": data_id}

    # menu
    def menu_create(self, body: Any, query: dict[str, str]) -> dict[str, Any]:
        err = _need_object(body)
        if err:
            return err
        buttons = body.get("button")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            return _error(40016)
        for button in buttons:
            if not isinstance(button, dict):
                return _error(47001)
            subs = button.get("sub_button")
            if subs:  # a parent: name only, 1-5 children
                if not _name_ok(button.get("name"), 16):
                    return _error(40018)
                if not isinstance(subs, list) or len(subs) > 5:
                    return _error(40023)
                for sub in subs:
                    code = _leaf_error(sub, 60, sub=True)
                    if code:
                        return _error(code)
            else:
                code = _leaf_error(button, 16, sub=False)
                if code:
                    return _error(code)
        self.s.menu = {"button": buttons}
        return dict(_OK)

    def menu_get(self, body: Any, query: dict[str, str]) -> dict[str, Any]:
        if self.s.menu is None:
            return _error(46003, "menu no exist")
        return {"menu": self.s.menu}

    # parameter QR codes
    def qrcode_create(self, body: Any, query: dict[str, str]) -> dict[str, Any]:
        err = _need_object(body)
        if err:
            return err
        action = body.get("action_name")
        if action not in _QR_ACTIONS:
            return _error(40097, "invalid args")
        info = body.get("action_info")
        scene = info.get("scene") if isinstance(info, dict) else None
        if not isinstance(scene, dict):
            return _error(40097, "invalid args")
        if action.endswith("STR_SCENE"):
            value = scene.get("scene_str")
            if not isinstance(value, str) or not 1 <= len(value) <= 64:
                return _error(40097, "invalid args")
        else:
            value = scene.get("scene_id")
            limit = 100000 if action == "QR_LIMIT_SCENE" else 2**32 - 1
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
                return _error(40097, "invalid args")
        permanent = action.startswith("QR_LIMIT")
        expire = body.get("expire_seconds", 60)
        if not permanent and (isinstance(expire, bool) or not isinstance(expire, int) or not 1 <= expire <= 2592000):
            return _error(40097, "invalid args")
        ticket = "gQ" + secrets.token_urlsafe(70)
        url = "https://weixin.qq.com/q/" + secrets.token_urlsafe(16)[:22]
        self.s.qrcodes.append({"ticket": ticket, "url": url, "scene": str(value), "action_name": action,
                               "expire_seconds": None if permanent else expire, "created_at": self.s.now()})
        out: dict[str, Any] = {"ticket": ticket, "url": url}
        if not permanent:
            out["expire_seconds"] = expire
        return out

    # users
    def user_info(self, body: Any, query: dict[str, str]) -> dict[str, Any]:
        openid = query.get("openid")
        if not self.s.openid_ok(openid):
            return _error(40003)
        user = self.s.user(openid)
        if not user.get("followed", True):
            return {"subscribe": 0, "openid": openid}
        info: dict[str, Any] = {
            "subscribe": 1,
            "openid": openid,
            "nickname": "",
            "sex": 0,
            "language": query.get("lang", "zh_CN"),
            "city": "",
            "province": "",
            "country": "",
            "headimgurl": "",
            "subscribe_time": 1_700_000_000,
            "remark": "",
            "groupid": 0,
            "tagid_list": [],
            "subscribe_scene": "ADD_SCENE_QR_CODE",
            "qr_scene": 0,
            "qr_scene_str": "",
        }
        control = {"followed", "kefu_window", "kefu_quota", "accept_subscribe"}
        info.update({k: v for k, v in user.items() if k not in control})
        return info

    def not_implemented(self, body: Any, query: dict[str, str]) -> dict[str, Any]:
        return _error(48001, "api unauthorized (this API is not implemented by the fake WeChat server)")


def _name_ok(name: Any, max_bytes: int) -> bool:
    return isinstance(name, str) and 0 < len(name.encode("utf-8")) <= max_bytes


def _leaf_error(button: Any, name_bytes: int, *, sub: bool) -> int | None:
    """Errcode for an invalid menu leaf (sub-button codes are the top-level ones + 7, as on the platform)."""
    shift = 7 if sub else 0
    if not isinstance(button, dict):
        return 47001
    kind = button.get("type")
    if kind not in _MENU_TYPES:
        return 40017 + shift
    if not _name_ok(button.get("name"), name_bytes):
        return 40018 + shift
    if kind in _MENU_KEY_TYPES:
        key = button.get("key")
        if not isinstance(key, str) or not 0 < len(key.encode("utf-8")) <= 128:
            return 40019 + shift
    if kind in ("view", "miniprogram"):
        url = button.get("url")
        if not isinstance(url, str) or not 0 < len(url.encode("utf-8")) <= 1024:
            return 40020 + shift
    if kind == "miniprogram" and not (button.get("appid") and button.get("pagepath")):
        return 40017 + shift
    if kind in ("media_id", "view_limited") and not button.get("media_id"):
        return 40007
    if kind in ("article_id", "article_view_limited") and not button.get("article_id"):
        return 40007
    return None


# (method, path) -> (handler name, needs access_token)
_ROUTES: dict[str, tuple[str, str, bool]] = {
    "/cgi-bin/stable_token": ("POST", "stable_token", False),
    "/sns/oauth2/access_token": ("GET", "oauth_access_token", False),
    "/cgi-bin/token": ("GET", "classic_token", False),
    "/cgi-bin/message/custom/send": ("POST", "custom_send", True),
    "/cgi-bin/message/template/send": ("POST", "template_send", True),
    "/cgi-bin/message/subscribe/bizsend": ("POST", "subscribe_send", True),
    "/cgi-bin/message/subscribe/send": ("POST", "subscribe_send", True),
    "/cgi-bin/message/mass/sendall": ("POST", "mass_sendall", True),
    "/cgi-bin/menu/create": ("POST", "menu_create", True),
    "/cgi-bin/menu/get": ("GET", "menu_get", True),
    "/cgi-bin/user/info": ("GET", "user_info", True),
    "/cgi-bin/media/get": ("GET", "media_get", True),
    "/cgi-bin/ticket/getticket": ("GET", "getticket", True),
    "/cgi-bin/qrcode/create": ("POST", "qrcode_create", True),
}
_QR_ACTIONS = frozenset({"QR_SCENE", "QR_STR_SCENE", "QR_LIMIT_SCENE", "QR_LIMIT_STR_SCENE"})

STATE_KEY: web.AppKey[FakeWeChat] = web.AppKey("fake_wechat", FakeWeChat)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _parse_body(raw: bytes) -> Any:
    if not raw.strip():
        return _EMPTY
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return _BAD


def _recordable(body: Any) -> Any:
    return None if body is _EMPTY or body is _BAD else body


async def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without answering, as a failing gateway or a reset does."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    # Nothing can be written any more; aiohttp notices the closed transport and sends nothing.
    raise asyncio.CancelledError


def _fault_response(rule: FaultRule) -> web.Response:
    if rule.body is not None:
        if isinstance(rule.body, dict | list):
            return _json(rule.body, status=rule.status)
        return web.Response(text=str(rule.body), status=rule.status, content_type="text/plain")
    if rule.errcode is not None:
        return _json(_error(rule.errcode, rule.errmsg), status=rule.status)
    return web.Response(
        text=f"<html><head><title>{rule.status}</title></head><body><center><h1>{rule.status}</h1></center>"
        "<hr><center>stgw</center></body></html>",
        status=rule.status,
        content_type="text/html",
    )


def create_app(
    *,
    latency_ms: float = 0,
    appid: str = DEFAULT_APPID,
    secret: str | None = None,
    clock: Callable[[], float] = time.time,
    state: FakeWeChat | None = None,
) -> web.Application:
    """Build the fake WeChat API application.

    ``secret=None`` accepts any secret for ``appid``. ``latency_ms`` is added to every API call with
    ``asyncio.sleep`` (never blocking). The state is ``app[STATE_KEY]`` (a :class:`FakeWeChat`);
    pass ``state`` to share or pre-configure one (``appid``/``secret``/``latency_ms``/``clock`` are then
    ignored).
    """
    fake = state or FakeWeChat(appid=appid, secret=secret, latency_ms=latency_ms, clock=clock)
    api = _Api(fake)
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[STATE_KEY] = fake

    async def handle_api(request: web.Request) -> web.StreamResponse:
        path = request.path
        raw = await request.read() if request.body_exists else b""
        body = _parse_body(raw)
        record: dict[str, Any] = {
            "index": len(fake.calls),
            "method": request.method,
            "path": path,
            "query": dict(request.query),
            "body": _recordable(body),
            "raw": raw.decode("utf-8", errors="replace"),
            "at": fake.now(),
        }
        fake.calls.append(record)
        fake.stats[path] += 1
        if fake.latency_ms > 0:
            await asyncio.sleep(fake.latency_ms / 1000)
        rule = fake.take_fault(path)
        if rule is not None:
            if rule.delay_ms > 0:
                await asyncio.sleep(rule.delay_ms / 1000)
            if rule.answers:
                record["fault"] = True
                if rule.drop:
                    record["errcode"] = None
                    fake.errcodes["drop"] += 1
                    return await _drop(request)
                record["errcode"] = rule.errcode
                record["status"] = rule.status
                fake.errcodes[str(rule.errcode if rule.errcode is not None else f"http {rule.status}")] += 1
                return _fault_response(rule)
        method, name, needs_token = _ROUTES.get(path, ("*", "not_implemented", False))
        if method != "*" and request.method != method:
            result = _error(43002 if method == "POST" else 43001)
        else:
            result = (fake.check_token(request.query.get("access_token")) if needs_token else None) or getattr(
                api, name
            )(body, dict(request.query))
        rendered = result.pop("_rendered", None)
        if rendered is not None:
            record["rendered"] = rendered
        errcode = result.get("errcode", 0)
        record["errcode"] = errcode
        fake.errcodes[str(errcode)] += 1
        if "_file" in result:
            content, ctype = result["_file"]
            return web.Response(body=content, content_type=ctype, headers={
                "Content-Disposition": f'attachment; filename="{result["_name"]}.amr"'})
        return _json(result)

    async def get_calls(request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", 0))
        except ValueError:
            raise web.HTTPBadRequest(text="since must be an integer") from None
        want = request.query.get("path")
        calls = [c for c in fake.calls[max(since, 0):] if want is None or c["path"] == want]
        return _json({"calls": calls, "next": len(fake.calls)})

    async def get_stats(request: web.Request) -> web.Response:
        return _json({"total": len(fake.calls), "by_path": dict(fake.stats), "by_errcode": dict(fake.errcodes)})

    async def read_json(request: web.Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="body must be JSON") from None

    async def post_faults(request: web.Request) -> web.Response:
        data = await read_json(request)
        items = data if isinstance(data, list) else [data]
        try:
            rules = [FaultRule.from_json(item) for item in items]
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        for rule in rules:
            fake.add_fault(rule)
        return _json({"ok": True, "faults": _faults_json()})

    def _faults_json() -> list[dict[str, Any]]:
        return [r.to_json() for rules in fake.faults.values() for r in rules]

    async def get_faults(request: web.Request) -> web.Response:
        return _json({"faults": _faults_json()})

    async def delete_faults(request: web.Request) -> web.Response:
        fake.faults.clear()
        return _json({"ok": True})

    async def post_users(request: web.Request) -> web.Response:
        data = await read_json(request)
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text='body must be {"<openid>": {...}}')
        try:
            fake.set_users(data)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return _json({"ok": True, "users": len(fake.users)})

    async def get_users(request: web.Request) -> web.Response:
        return _json({"users": fake.users})

    async def get_config(request: web.Request) -> web.Response:
        return _json(fake.config())

    async def post_config(request: web.Request) -> web.Response:
        data = await read_json(request)
        try:
            fake.configure(data if isinstance(data, dict) else {})
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return _json(fake.config())

    async def get_clock(request: web.Request) -> web.Response:
        return _json({"now": fake.now(), "offset": fake.clock_offset})

    async def post_clock(request: web.Request) -> web.Response:
        data = await read_json(request)
        try:
            fake.advance_clock(float(data.get("advance", 0)))
        except (AttributeError, TypeError, ValueError):
            raise web.HTTPBadRequest(text='body must be {"advance": seconds}') from None
        return _json({"now": fake.now(), "offset": fake.clock_offset})

    async def get_tokens(request: web.Request) -> web.Response:
        now = fake.now()
        return _json({"now": now, "tokens": [
            {"access_token": t.value, "kind": t.kind, "issued_at": t.issued_at, "expires_at": t.expires_at,
             "valid_until": t.valid_until, "valid": now < t.valid_until,
             "current": fake.current.get(t.kind) is t}
            for t in fake.tokens.values()
        ]})

    async def post_tokens(request: web.Request) -> web.Response:
        data = await read_json(request)
        if not isinstance(data, dict) or not isinstance(data.get("revoke"), str):
            raise web.HTTPBadRequest(text='body must be {"revoke": "<token>" | "all"}')
        return _json({"revoked": fake.revoke(data["revoke"])})

    async def get_qrcodes(request: web.Request) -> web.Response:
        want = request.query.get("url")
        return _json({"qrcodes": [q for q in fake.qrcodes if want is None or q["url"] == want]})

    async def post_reset(request: web.Request) -> web.Response:
        fake.reset()
        return _json({"ok": True})

    async def get_templates(request: web.Request) -> web.Response:
        return _json({"templates": fake.templates})

    async def post_templates(request: web.Request) -> web.Response:
        data = await read_json(request)
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text='body must be {"<template_id>": {"type": "template" | "subscribe", ...}}')
        try:
            fake.add_templates(data)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return _json({"ok": True, "templates": len(fake.templates)})

    async def get_subscribe(request: web.Request) -> web.Response:
        return _json({"consents": [{"openid": o, "template_id": t, **c} for (o, t), c in fake.consents.items()]})

    async def post_subscribe(request: web.Request) -> web.Response:
        """A person chose in a 订阅通知 popup (or turned a template off): the platform records it and sends
        the bot the event, whose XML is returned (POST it to the bot's callback, signed)."""
        from bot.sim import subscribe_event_xml

        data = await read_json(request)
        if not isinstance(data, dict) or not fake.openid_ok(data.get("openid")):
            raise web.HTTPBadRequest(text='body must be {"openid", "templates": {"<id>": "accept" | "reject"}, '
                                          '"event": "popup" | "change", "scene": 1}')
        choices = data.get("templates")
        event = data.get("event", "popup")
        if not isinstance(choices, dict) or not choices or event not in ("popup", "change"):
            raise web.HTTPBadRequest(text='templates must be {"<id>": "accept" | "reject"}; event popup or change')
        try:
            for tid, status in choices.items():
                fake.subscribe_choice(data["openid"], str(tid), str(status))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        scene = str(data.get("scene", 1))
        items = [{"TemplateId": t, "SubscribeStatusString": st, **({"PopupScene": scene} if event == "popup" else {})}
                 for t, st in choices.items()]
        xml = subscribe_event_xml(data["openid"], f"subscribe_msg_{event}_event", items,
                                  create_time=int(fake.now()))
        return _json({"ok": True, "xml": xml})

    async def post_media(request: web.Request) -> web.Response:
        data = await read_json(request)
        try:
            media_id = str(data["media_id"])
            content = base64.b64decode(data.get("base64", "")) if data.get("base64") else DEMO_AMR
        except (KeyError, TypeError, ValueError):
            raise web.HTTPBadRequest(text='body must be {"media_id", "base64"?, "content_type"?}') from None
        fake.media[media_id] = (content, str(data.get("content_type") or "audio/amr"))
        return _json({"ok": True, "bytes": len(content)})

    async def post_jssdk_verify(request: web.Request) -> web.Response:
        """What WeChat's client does with wx.config: check the signature against the tickets issued."""
        data = await read_json(request)
        try:
            why = fake.verify_jssdk(str(data["url"]), str(data["nonceStr"]), str(data["timestamp"]),
                                    str(data["signature"]))
        except (KeyError, TypeError):
            raise web.HTTPBadRequest(text='body must be {"url", "nonceStr", "timestamp", "signature"}') from None
        return _json({"ok": why is None, "reason": why})

    app.router.add_get("/__fake__/calls", get_calls)
    app.router.add_get("/__fake__/stats", get_stats)
    app.router.add_get("/__fake__/faults", get_faults)
    app.router.add_post("/__fake__/faults", post_faults)
    app.router.add_delete("/__fake__/faults", delete_faults)
    app.router.add_get("/__fake__/users", get_users)
    app.router.add_post("/__fake__/users", post_users)
    app.router.add_get("/__fake__/config", get_config)
    app.router.add_post("/__fake__/config", post_config)
    app.router.add_get("/__fake__/clock", get_clock)
    app.router.add_post("/__fake__/clock", post_clock)
    app.router.add_get("/__fake__/tokens", get_tokens)
    app.router.add_post("/__fake__/tokens", post_tokens)
    app.router.add_post("/__fake__/reset", post_reset)
    app.router.add_get("/__fake__/templates", get_templates)
    app.router.add_post("/__fake__/templates", post_templates)
    app.router.add_get("/__fake__/subscribe", get_subscribe)
    app.router.add_post("/__fake__/subscribe", post_subscribe)
    app.router.add_post("/__fake__/media", post_media)
    app.router.add_post("/__fake__/jssdk/verify", post_jssdk_verify)
    app.router.add_get("/__fake__/qrcodes", get_qrcodes)
    async def oauth_authorize(request: web.Request) -> web.StreamResponse:
        """``open.weixin.qq.com/connect/oauth2/authorize``: what WeChat's browser does with it. The
        "browser" is the openid in the ``fake_wechat_openid`` cookie (tests set it on the fake's host), or
        ``oauth_openid`` of the state; WeChat's own error pages become 400s naming the problem."""
        q = request.query
        fake.calls.append({"index": len(fake.calls), "method": "GET", "path": request.path, "query": dict(q),
                           "body": None, "raw": "", "at": fake.now()})
        fake.stats[request.path] += 1
        redirect = q.get("redirect_uri", "")
        problem = None
        if q.get("appid") != fake.appid:
            problem = "appid 错误 (10002)"
        elif q.get("response_type") != "code":
            problem = "response_type 错误 (10004)"
        elif q.get("scope") not in ("snsapi_base", "snsapi_userinfo"):
            problem = "scope 参数错误或没有 scope 权限 (10005)"
        elif not redirect.startswith(("http://", "https://")):
            problem = "redirect_uri 参数错误 (10003)"
        elif fake.oauth_domain and URL(redirect).host != fake.oauth_domain:
            problem = "redirect_uri 域名与后台配置不一致 (10003)"
        openid = request.cookies.get("fake_wechat_openid") or fake.oauth_openid
        if problem is None and not openid:
            problem = "fake: no browser openid (cookie fake_wechat_openid or POST /__fake__/oauth)"
        if problem is not None:
            return web.Response(status=400, text=problem)
        target = URL(redirect).update_query(code=fake.oauth_code(openid), state=q.get("state", ""))
        raise web.HTTPFound(str(target))

    async def post_oauth(request: web.Request) -> web.Response:
        data = await read_json(request)
        if not isinstance(data, dict):
            return _json(_error(47001), status=400)
        if "openid" in data:
            fake.oauth_openid = str(data["openid"] or "")
        if "domain" in data:
            fake.oauth_domain = str(data["domain"] or "")
        return _json({"openid": fake.oauth_openid, "domain": fake.oauth_domain})

    app.router.add_get("/connect/oauth2/authorize", oauth_authorize)
    app.router.add_post("/__fake__/oauth", post_oauth)
    app.router.add_route("*", "/sns/{tail:.*}", handle_api)
    app.router.add_route("*", "/cgi-bin/{tail:.*}", handle_api)
    return app


class FakeWeChatServer:
    """Run the fake on a loopback port inside the current event loop.

    >>> async with FakeWeChatServer(latency_ms=5) as fake:   # doctest: +SKIP
    ...     client = WeChatClient(fake.base_url, fake.state.appid, "secret", MemoryTokenStore())

    ``port=0`` picks a free port; ``base_url`` and ``state`` are set once started. Access logging is
    off so that the fake keeps up with benchmark fan-outs.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, **app_kwargs: Any) -> None:
        self.host = host
        self.port = port
        self.app = create_app(**app_kwargs)
        self.state: FakeWeChat = self.app[STATE_KEY]
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> FakeWeChatServer:
        """Start serving; sets ``port`` and ``base_url``."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.base_url = f"http://{self.host}:{self.port}"
        return self

    async def stop(self) -> None:
        """Stop serving and free the port."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeWeChatServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
