"""HMAC-signed, expiring links: members answer a call-up and open job pages without logging in.

(Memorial page links no longer use these: their claims are readable, so they carry an opaque token kept
in the database instead — :mod:`storage.linktokens`, which other links can move to.)

A token is ``base64url(json claims) + "." + base64url(hmac_sha256(secret_key, claims))``. Claims
carry ``exp`` (epoch seconds) when the link expires. The secret is ``server.secret_key``; an empty,
sample or short key is refused unless the bot runs against the bundled fake WeChat API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.config import Config

log = logging.getLogger("vetbot.links")


class LinkError(Exception):
    """A link that is malformed, forged or expired; ``reason`` is 'bad' or 'expired'."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _secret(config: Config) -> bytes:
    """``server.secret_key``; ConfigError when an outsider could forge links with it (empty, a sample,
    short: see :func:`bot.config.check_secret_key`, which tolerates a sample key only against the
    bundled fake WeChat API on loopback).

    There is no fallback any more: a key derived from the appid, token and AppSecret when the setting
    was empty came from values that sit in the WeChat console, screenshots and logs."""
    key = config.server.secret_key
    if _problem(key) is not None:
        from bot.config import check_secret_key

        check_secret_key(config)  # raises unless the API is the local fake one
    return key.encode()


@lru_cache(maxsize=16)
def _problem(key: str) -> str | None:
    from bot.config import secret_key_problem

    return secret_key_problem(key)


class Signer:
    """Signs tokens with the deployment's key, prepared once: for code that signs thousands of links in
    one go (a job-fair import's alerts). :func:`sign` is the one-off form."""

    def __init__(self, config: Config) -> None:
        self._mac = hmac.new(_secret(config), digestmod=hashlib.sha256)

    def sign(self, claims: dict[str, Any], ttl_s: float | None = None, now: float | None = None) -> str:
        """A token for ``claims``; with ``ttl_s`` it expires that many seconds from ``now``."""
        body = dict(claims)
        if ttl_s is not None:
            body["exp"] = int((now if now is not None else time.time()) + ttl_s)
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()
        mac = self._mac.copy()
        mac.update(raw)
        return f"{_b64(raw)}.{_b64(mac.digest()[:16])}"


def sign(config: Config, claims: dict[str, Any], ttl_s: float | None = None, now: float | None = None) -> str:
    """A token for ``claims``; with ``ttl_s`` it expires that many seconds from ``now``."""
    return Signer(config).sign(claims, ttl_s, now)


def verify(config: Config, token: str, now: float | None = None) -> dict[str, Any]:
    """The claims of a valid token; LinkError('bad') or LinkError('expired') otherwise."""
    try:
        raw_b64, mac_b64 = token.split(".", 1)
        raw, mac = _unb64(raw_b64), _unb64(mac_b64)
    except (ValueError, TypeError):
        raise LinkError("bad") from None
    try:
        key = _secret(config)
    except Exception:  # ConfigError: `vetbot serve` refuses such a key at start; a page must not 500
        log.error("link refused: server.secret_key is unfit to check links (empty, sample or short)")
        raise LinkError("bad") from None
    good = hmac.new(key, raw, hashlib.sha256).digest()[:16]
    if not hmac.compare_digest(mac, good):
        raise LinkError("bad")
    try:
        claims = json.loads(raw)
    except ValueError:
        raise LinkError("bad") from None
    if not isinstance(claims, dict):
        raise LinkError("bad")
    exp = claims.get("exp")
    if exp is not None and (now if now is not None else time.time()) > exp:
        raise LinkError("expired")
    return claims


#: The kind of opaque token (:mod:`storage.linktokens`) an SMS answer link carries, with data ``{"c": call-up
#: id, "m": member id}``; the answer page resolves it (:func:`bot.web.sms.answer_claims`).
CALLUP_SMS_KIND = "callup_sms"


def callup_sms_answer_link(config: Config, token: str) -> str:
    """The answer page link in a call-up SMS to a roster member without WeChat: ``/r/<token>``, the same
    page as the signed WeChat links, with an opaque token (``CALLUP_SMS_KIND``) that names nobody.

    Such a page is opened outside WeChat by whoever holds the phone (or a forwarded copy of the SMS): the
    page's own gate for pages opened outside WeChat (the last four digits of the phone on file) applies
    to it like to any other answer link."""
    return f"{config.server.public_url.rstrip('/')}/r/{token}"


def sign_link(config: Config, path: str, ttl_s: float | None = None, **claims: Any) -> str:
    """Absolute URL on ``server.public_url``: ``path`` with ``{token}`` replaced, or ``?t=<token>``."""
    token = sign(config, claims, ttl_s)
    base = config.server.public_url.rstrip("/")
    if "{token}" in path:
        return base + path.replace("{token}", token)
    sep = "&" if "?" in path else "?"
    return f"{base}{path}{sep}t={token}"
