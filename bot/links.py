"""Links to the pages: opaque tokens kept in the database for links about a person, HMAC-signed claims
for the rest.

A link that names a person (a call-up answer page; the memorial's tribute links) carries an opaque random
token stored hashed in ``link_tokens`` (:mod:`storage.linktokens`): it says nothing about whom it belongs
to, it expires, and nobody can make one with ``server.secret_key`` alone. Opening one still does not make
the opener its person: :mod:`bot.web.viewer` checks who is looking (WeChat OAuth, or the phone's last four
digits) before a page shows or records anything.

:func:`answer_links` / :func:`answer_link` build the answer page links of a call-up, for members with or
without WeChat (an SMS carries the same kind of link; the page then asks for the phone's digits).

The signed form below remains for links that name no person (the staff roster link: the page itself
checks that a staff member opens it).

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
    from collections.abc import Sequence
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncSession

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


def sign_link(config: Config, path: str, ttl_s: float | None = None, **claims: Any) -> str:
    """Absolute URL on ``server.public_url``: ``path`` with ``{token}`` replaced, or ``?t=<token>``."""
    token = sign(config, claims, ttl_s)
    base = config.server.public_url.rstrip("/")
    if "{token}" in path:
        return base + path.replace("{token}", token)
    sep = "&" if "?" in path else "?"
    return f"{base}{path}{sep}t={token}"


#: ``link_tokens.kind`` of a call-up answer page link; data ``{"c": callup id, "m": member id}``.
ANSWER_KIND = "callup_answer"


def _answer_expiry(config: Config, created_at: datetime, now: datetime) -> datetime:
    """``callup.link_ttl_h`` after the call-up was created; a link made later (a reminder near the end)
    still gets an hour."""
    from datetime import timedelta

    return max(created_at + timedelta(hours=config.callup.link_ttl_h), now + timedelta(hours=1))


async def answer_links(session: AsyncSession, config: Config, callup: Any, members: Sequence[tuple[int, str | None]],
                       now: datetime) -> dict[int, str]:
    """Answer page links (``/r/<token>``) of ``callup`` for ``members`` ((member id, openid or None)
    pairs), one new token per member written in one statement in the caller's transaction. Works for
    members without WeChat (an SMS link): the page then asks for the last four digits of their phone."""
    from storage import linktokens

    if not members:
        return {}
    ttl = _answer_expiry(config, callup.created_at, now) - now
    tokens = await linktokens.issue_many(session, ANSWER_KIND, [(openid or "", {"c": int(callup.id), "m": int(mid)})
                                                                for mid, openid in members], ttl, now=now)
    base = config.server.public_url.rstrip("/") + "/r/"
    return {int(mid): base + t for (mid, _), t in zip(members, tokens, strict=True)}


async def answer_link(session: AsyncSession, config: Config, callup: Any, member_id: int, openid: str | None,
                      now: datetime) -> str:
    """The answer page link of one member (see :func:`answer_links`)."""
    return (await answer_links(session, config, callup, [(member_id, openid)], now))[int(member_id)]


#: ``link_tokens.kind`` of a person's job pages link (a posting, a digest, pause/stop); data ``{}``: the
#: posting or digest id rides in the URL (``?p=`` / ``?d=``), the token names only its person. One token
#: per person and alert run, so a job-fair import writes one row per recipient, not one per alert.
JOBS_KIND = "jobs"


class JobLinks:
    """The job page links of one alert or digest run: one opaque token per person, issued in one statement
    (:meth:`issue`), then any number of links built without the database."""

    def __init__(self, config: Config, tokens: dict[str, str]) -> None:
        self._base = config.server.public_url.rstrip("/")
        self._tokens = tokens

    @classmethod
    async def issue(cls, session: AsyncSession, config: Config, openids: Sequence[str], now: datetime,
                    ttl_s: float) -> JobLinks:
        """Tokens for ``openids`` (distinct), valid ``ttl_s`` seconds, in the caller's transaction."""
        from storage import linktokens

        people = list(dict.fromkeys(openids))
        tokens = await linktokens.issue_many(session, JOBS_KIND, [(o, {}) for o in people], ttl_s, now=now)
        return cls(config, dict(zip(people, tokens, strict=True)))

    def posting_path(self, openid: str, posting_id: int) -> str:
        return f"/jobs/p/{self._tokens[openid]}?p={int(posting_id)}"

    def posting(self, openid: str, posting_id: int) -> str:
        """Absolute link to a posting's page for ``openid``."""
        return self._base + self.posting_path(openid, posting_id)

    def digest(self, openid: str, digest_id: int) -> str:
        """Absolute link to a digest's "see all" page for ``openid``."""
        return f"{self._base}/jobs/d/{self._tokens[openid]}?d={int(digest_id)}"
