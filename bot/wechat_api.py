"""The project's async WeChat Official Account API client (aiohttp).

wechatpy has no async client and retries token errors without bound, burning the daily token quota,
so the bot talks to the API through :class:`WeChatClient`:

* One access token shared by every process, through a pluggable :class:`TokenStore`
  (:class:`MemoryTokenStore` in one process; a database-backed store implements the same Protocol).
* Tokens come from ``POST /cgi-bin/stable_token``. On a token error (40001, 40014, 42001) the client
  refreshes once and retries the call once; a second token error raises :class:`TokenInvalid`.
  Nothing else is retried here: the outbox decides with :attr:`WeChatError.transient`.
* Every call has a timeout; JSON goes out as UTF-8 with raw Chinese (``ensure_ascii=False``), as
  WeChat shows ``\\uXXXX`` escapes literally.

Errors (all subclasses of :class:`WeChatError`, each with ``transient``):

=========================  ===========================  =========
class                      errcode                      transient
=========================  ===========================  =========
:class:`TokenInvalid`      40001, 40014, 42001          no
:class:`OutOfWindow`       45015                        no
:class:`OverQuota`         45047                        no
:class:`RateLimited`       45009, 45011                 yes (see ``retry_after``)
:class:`SystemBusy`        -1                           yes
:class:`Unfollowed`        43004                        no
:class:`InvalidOpenid`     40003                        no
:class:`IPNotWhitelisted`  40164                        no
:class:`NoConsent`         43101                        no
:class:`InvalidArgument`   47003                        no
:class:`InvalidTemplate`   40037                        no
:class:`WeChatError`       any other non-zero errcode   no
:class:`WeChatTransportError`  timeout, HTTP 5xx, dropped connection, non-JSON body  yes
=========================  ===========================  =========
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import aiohttp

__all__ = [
    "WECHAT_API_BASE",
    "IPNotWhitelisted",
    "InvalidArgument",
    "InvalidOpenid",
    "InvalidTemplate",
    "Media",
    "MemoryTokenStore",
    "NoConsent",
    "OutOfWindow",
    "OverQuota",
    "RateLimited",
    "SystemBusy",
    "TokenFetch",
    "TokenInvalid",
    "TokenStore",
    "Unfollowed",
    "WeChatClient",
    "WeChatError",
    "WeChatTransportError",
    "check_response",
    "error_for",
]

WECHAT_API_BASE = "https://api.weixin.qq.com"

_BEIJING = 8 * 3600
_T = TypeVar("_T")


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------


class WeChatError(Exception):
    """A WeChat API call failed. ``errcode``/``errmsg`` are the platform's; ``path`` the API path.

    ``transient`` tells the outbox whether retrying later can succeed. Plain ``WeChatError`` is used
    for every errcode without a dedicated subclass and is permanent.
    """

    codes: ClassVar[frozenset[int]] = frozenset()
    transient: bool = False

    def __init__(self, errcode: int | None, errmsg: str, path: str) -> None:
        super().__init__(errcode, errmsg, path)
        self.errcode = errcode
        self.errmsg = errmsg
        self.path = path

    def __str__(self) -> str:
        return f"{self.path}: errcode {self.errcode}: {self.errmsg}"


class TokenInvalid(WeChatError):
    """The access token was refused (40001 invalid, 40014 invalid, 42001 expired)."""

    codes = frozenset({40001, 40014, 42001})


class OutOfWindow(WeChatError):
    """45015: customer-service message outside the user's window, or the user unfollowed."""

    codes = frozenset({45015})


class OverQuota(WeChatError):
    """45047: the user's customer-service message count for the current window is used up."""

    codes = frozenset({45047})


class RateLimited(WeChatError):
    """45009 daily quota or 45011 per-minute quota reached. ``retry_after`` suggests a delay in seconds."""

    codes = frozenset({45009, 45011})
    transient = True

    def __init__(self, errcode: int | None, errmsg: str, path: str, *, now: float | None = None) -> None:
        super().__init__(errcode, errmsg, path)
        if errcode == 45011:
            self.retry_after: float = 60.0
        else:  # daily quotas reset at midnight Beijing time
            t = time.time() if now is None else now
            self.retry_after = 86400 - ((t + _BEIJING) % 86400)


class SystemBusy(WeChatError):
    """-1: the platform is busy; retry with backoff."""

    codes = frozenset({-1})
    transient = True


class Unfollowed(WeChatError):
    """43004: the user does not follow the account (any more)."""

    codes = frozenset({43004})


class InvalidOpenid(WeChatError):
    """40003: ``touser``/``openid`` is not an openid of this account."""

    codes = frozenset({40003})


class IPNotWhitelisted(WeChatError):
    """40164: this server's IP is not in the account's API IP whitelist (an operator must add it)."""

    codes = frozenset({40164})


class NoConsent(WeChatError):
    """43101: a 订阅通知 the person gave no consent for (never, turned off, or a one-time consent used up)."""

    codes = frozenset({43101})


class InvalidArgument(WeChatError):
    """47003: a template / 订阅通知 value breaks its keyword type's rule (errmsg names the field)."""

    codes = frozenset({47003})


class InvalidTemplate(WeChatError):
    """40037: the template id is not one of the account's templates."""

    codes = frozenset({40037})


class WeChatTransportError(WeChatError):
    """No usable WeChat answer: timeout, HTTP 5xx, dropped connection or a body that is not JSON.

    ``errcode`` is None; ``status`` is the HTTP status when there was one. Transient, except for an
    unexpected HTTP 4xx (wrong base URL or proxy), which retrying will not fix.
    """

    transient = True

    def __init__(self, message: str, path: str, *, status: int | None = None) -> None:
        super().__init__(None, message, path)
        self.args = (message, path)
        self.status = status
        if status is not None and 400 <= status < 500 and status not in (408, 429):
            self.transient = False

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_transport_error, (self.errmsg, self.path, self.status))

    def __str__(self) -> str:
        return f"{self.path}: {self.errmsg}"


def _rebuild_transport_error(message: str, path: str, status: int | None) -> WeChatTransportError:
    return WeChatTransportError(message, path, status=status)


_CLASSES: dict[int, type[WeChatError]] = {
    code: cls
    for cls in (TokenInvalid, OutOfWindow, OverQuota, RateLimited, SystemBusy, Unfollowed, InvalidOpenid,
                IPNotWhitelisted, NoConsent, InvalidArgument, InvalidTemplate)
    for code in cls.codes
}


def error_for(errcode: int, errmsg: str, path: str, *, now: float | None = None) -> WeChatError:
    """The typed error for a non-zero ``errcode`` (plain :class:`WeChatError` when it has no class)."""
    cls = _CLASSES.get(errcode, WeChatError)
    if cls is RateLimited:
        return RateLimited(errcode, errmsg, path, now=now)
    return cls(errcode, errmsg, path)


def check_response(data: Any, path: str, *, now: float | None = None) -> dict[str, Any]:
    """Return a decoded WeChat response, or raise the mapped error.

    A body without ``errcode`` (token, user info) or with ``errcode`` 0 is a success, whatever
    ``errmsg`` says ("ok", "" or missing). A body that is not a JSON object raises
    :class:`WeChatTransportError`.
    """
    if not isinstance(data, dict):
        raise WeChatTransportError(f"expected a JSON object, got {type(data).__name__}", path)
    raw = data.get("errcode", 0)
    try:
        errcode = int(raw) if raw is not None else 0
    except (TypeError, ValueError):
        raise WeChatTransportError(f"errcode is not a number: {raw!r}", path) from None
    if errcode != 0:
        raise error_for(errcode, str(data.get("errmsg", "")), path, now=now)
    return data


# ---------------------------------------------------------------------------------------------------
# Token storage
# ---------------------------------------------------------------------------------------------------

#: ``fetch(force_refresh) -> (access_token, expires_in seconds)``: asks WeChat for a token.
TokenFetch = Callable[[bool], Awaitable[tuple[str, int]]]


@runtime_checkable
class TokenStore(Protocol):
    """Where the access token lives, so that every process of the bot shares ONE token.

    WeChat keeps one current token per account: a process that fetches its own would cut the others
    off after the 5-minute overlap. Implementations (memory, database) must provide exactly:

    ``load()``
        The stored ``(token, expires_at)`` (``expires_at`` = epoch seconds) or None. No lock; called
        on the hot path, so it should be cheap. The client caches the result until near expiry.

    ``refresh(fetch, stale)``
        Under an exclusive lock that spans all processes sharing the store (``asyncio.Lock`` in one
        process, ``SELECT ... FOR UPDATE`` / an advisory lock in a database):

        1. if the stored token is still valid (``expires_at > now``) and differs from ``stale``,
           return it: someone else refreshed while we waited;
        2. otherwise call ``await fetch(stale is not None)``, store ``(token, now + expires_in)``
           and return the token.

        ``stale`` is the token the caller found unusable (refused by WeChat, or inside the refresh
        margin), None when there was no token at all. Exceptions from ``fetch`` propagate and must
        leave the stored token unchanged. Keep the lock held during ``fetch`` (it is bounded by the
        client's timeout) so that N waiting callers cause one fetch, not N.
    """

    async def load(self) -> tuple[str, float] | None:
        """The stored ``(token, expires_at epoch)``, or None."""
        ...

    async def refresh(self, fetch: TokenFetch, stale: str | None) -> str:
        """Return a token newer than ``stale``, fetching one under the lock if nobody else did."""
        ...


class MemoryTokenStore:
    """A :class:`TokenStore` for one process (an ``asyncio.Lock``); share one instance between clients."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._lock = asyncio.Lock()
        self._value: tuple[str, float] | None = None
        self._clock = clock

    async def load(self) -> tuple[str, float] | None:
        """The stored ``(token, expires_at)``, or None."""
        return self._value

    async def refresh(self, fetch: TokenFetch, stale: str | None) -> str:
        """See :meth:`TokenStore.refresh`."""
        async with self._lock:
            current = self._value
            if current is not None and current[1] > self._clock() and current[0] != stale:
                return current[0]
            token, expires_in = await fetch(stale is not None)
            self._value = (token, self._clock() + expires_in)
            return token


# ---------------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------------


class WeChatClient:
    """Async client for the WeChat Official Account API.

    ``base_url`` is ``https://api.weixin.qq.com`` in production and the fake's URL in tests.
    ``session`` may be shared (the client then does not close it); ``timeout`` (seconds) bounds every
    request; the stored token is used until ``refresh_margin`` seconds before it expires; ``clock``
    is the time source (tests pass a fake one).
    """

    def __init__(
        self,
        base_url: str,
        appid: str,
        secret: str,
        token_store: TokenStore,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 10.0,
        refresh_margin: float = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.appid = appid
        self._secret = secret
        self.token_store = token_store
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.timeout = timeout
        self.refresh_margin = refresh_margin
        self._clock = clock
        self._cached: tuple[str, float] | None = None
        # After a proactive refresh that returned the same token (the platform only renews in the last
        # 5 minutes), keep using it until this time instead of asking again on every call.
        self._quiet_until = 0.0

    def __repr__(self) -> str:  # never show the secret
        return f"WeChatClient({self.base_url!r}, appid={self.appid!r})"

    # -- plumbing -------------------------------------------------------------------------------
    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._own_session:
                raise RuntimeError("the aiohttp session passed to WeChatClient is closed")
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100),
                headers={"User-Agent": "vetbot-wechat-client"},
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session if the client created it."""
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def __aenter__(self) -> WeChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _http(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        secret_values: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """One HTTP exchange; returns the checked JSON object or raises a :class:`WeChatError`."""
        data = None
        headers = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            headers = {"Content-Type": "application/json; charset=utf-8"}
        try:
            async with self._get_session().request(
                method, self.base_url + path, params=params, data=data, headers=headers, timeout=self._timeout
            ) as resp:
                status = resp.status
                raw = await resp.read()
        except TimeoutError:
            raise WeChatTransportError(f"no answer within {self.timeout:g} s", path) from None
        except aiohttp.ClientError as exc:
            message = _redact(f"{type(exc).__name__}: {exc}", secret_values)
            raise WeChatTransportError(message, path) from None
        if status >= 500:
            raise WeChatTransportError(f"HTTP {status}", path, status=status)
        try:
            decoded = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            snippet = _redact(raw[:80].decode("utf-8", errors="replace"), secret_values)
            raise WeChatTransportError(f"HTTP {status}, body is not JSON: {snippet!r}", path, status=status) from None
        if not isinstance(decoded, dict) and status != 200:
            raise WeChatTransportError(f"HTTP {status}", path, status=status)
        result = check_response(decoded, path, now=self._clock())
        if status != 200 and "errcode" not in result:
            raise WeChatTransportError(f"HTTP {status}", path, status=status)
        return result

    # -- token ----------------------------------------------------------------------------------
    async def _fetch_stable(self, force: bool) -> tuple[str, int]:
        path = "/cgi-bin/stable_token"
        body = {"grant_type": "client_credential", "appid": self.appid, "secret": self._secret,
                "force_refresh": force}
        data = await self._http("POST", path, body=body, secret_values=(self._secret,))
        token, expires_in = data.get("access_token"), data.get("expires_in")
        if not isinstance(token, str) or not token or not isinstance(expires_in, int | float):
            raise WeChatTransportError("token answer without access_token/expires_in", path)
        return token, int(expires_in)

    def _fetcher(self, stale: str | None, *, proactive: bool) -> TokenFetch:
        """The ``fetch`` handed to the store.

        Forced refreshes are limited to 20 a day, 30 s apart, so ``force`` is honoured only when the
        normal mode hands back the very token we found unusable. After an expiry (42001) or when
        someone else already rotated the token, normal mode returns a usable one for free. A proactive
        refresh (token inside the margin but not refused) never forces.
        """

        async def fetch(force: bool) -> tuple[str, int]:
            token, expires_in = await self._fetch_stable(False)
            if token != stale:
                return token, expires_in
            if proactive:
                self._quiet_until = self._clock() + min(30.0, max(expires_in / 2, 1.0))
                return token, expires_in
            if force:
                return await self._fetch_stable(True)
            return token, expires_in

        return fetch

    async def _remember(self, token: str) -> str:
        stored = await self.token_store.load()
        self._cached = stored if stored is not None and stored[0] == token else None
        return token

    async def access_token(self) -> str:
        """A token usable for at least ``refresh_margin`` more seconds, refreshing through the store."""
        now = self._clock()
        cached = self._cached
        if cached is None or cached[1] - now <= self.refresh_margin:
            cached = self._cached = await self.token_store.load()
        if cached is not None:
            token, expires_at = cached
            if expires_at - now > self.refresh_margin:
                return token
            if expires_at > now and now < self._quiet_until:
                return token
        stale = cached[0] if cached is not None else None
        token = await self.token_store.refresh(self._fetcher(stale, proactive=True), stale)
        return await self._remember(token)

    async def _recover_token(self, refused: str) -> str:
        self._cached = None
        token = await self.token_store.refresh(self._fetcher(refused, proactive=False), refused)
        return await self._remember(token)

    # -- generic call ---------------------------------------------------------------------------
    async def _with_token(self, path: str, call: Callable[[str], Awaitable[_T]]) -> _T:
        """Run ``call(token)``; a token error refreshes once through the store and retries once."""
        token = await self.access_token()
        for attempt in (1, 2):
            try:
                return await call(token)
            except TokenInvalid as exc:
                if attempt == 2:
                    raise TokenInvalid(
                        exc.errcode,
                        f"{exc.errmsg} (still refused after one token refresh: check that no other "
                        f"system refreshes this account's token and that appid/secret are right)",
                        path,
                    ) from None
                token = await self._recover_token(token)
        raise AssertionError("unreachable")

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> dict[str, Any]:
        """Call any API that takes ``?access_token=``; returns the decoded JSON object.

        A token error triggers one refresh through the store and one retry; a second token error
        raises :class:`TokenInvalid`. All other errors are raised as they come.
        """

        async def call(token: str) -> dict[str, Any]:
            query = {**(params or {}), "access_token": token}
            return await self._http(method, path, params=query, body=json_body, secret_values=(token,))

        return await self._with_token(path, call)

    async def download(self, path: str, params: Mapping[str, str], *, max_bytes: int = 10_000_000) -> Media:
        """GET a file API (``media/get``): the bytes, or the mapped error when WeChat answers JSON.

        Bodies over ``max_bytes`` are refused (:class:`WeChatTransportError`, not transient) without
        reading them whole."""

        async def call(token: str) -> Media:
            query = {**params, "access_token": token}
            try:
                async with self._get_session().get(self.base_url + path, params=query,
                                                   timeout=self._timeout) as resp:
                    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                    length = resp.content_length
                    if length is not None and length > max_bytes:
                        raise WeChatTransportError(f"file of {length} bytes is over {max_bytes}", path, status=413)
                    raw = await resp.content.read(max_bytes + 1)
                    status = resp.status
                    disposition = resp.headers.get("Content-Disposition", "")
            except TimeoutError:
                raise WeChatTransportError(f"no answer within {self.timeout:g} s", path) from None
            except aiohttp.ClientError as exc:
                raise WeChatTransportError(_redact(f"{type(exc).__name__}: {exc}", (token,)), path) from None
            if status >= 500:
                raise WeChatTransportError(f"HTTP {status}", path, status=status)
            if len(raw) > max_bytes:
                raise WeChatTransportError(f"file is over {max_bytes} bytes", path, status=413)
            if ctype in ("application/json", "text/plain", "text/html", "") and raw.lstrip()[:1] == b"{":
                # Errors come back as JSON (often labelled text/plain): map them like any call.
                try:
                    decoded = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    decoded = None
                if isinstance(decoded, dict):
                    check_response(decoded, path, now=self._clock())
                    raise WeChatTransportError("expected a file, got a JSON answer", path, status=status)
            if status != 200:
                raise WeChatTransportError(f"HTTP {status}", path, status=status)
            name = ""
            if "filename=" in disposition:
                name = disposition.split("filename=", 1)[1].strip().strip('"')
            return Media(raw, ctype or "application/octet-stream", name)

        return await self._with_token(path, call)

    # -- messages -------------------------------------------------------------------------------
    async def send_custom(self, openid: str, msgtype: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Send a customer-service (kefu) message ``{"touser", "msgtype", msgtype: payload}``.

        Only inside the user's window (48 h after a message, 1 min after a click/follow/scan):
        :class:`OutOfWindow` (45015) or :class:`OverQuota` (45047) otherwise.
        """
        body = {"touser": openid, "msgtype": msgtype, msgtype: dict(payload)}
        return await self.request("POST", "/cgi-bin/message/custom/send", json_body=body)

    async def send_custom_text(self, openid: str, text: str) -> dict[str, Any]:
        """Send a customer-service text message."""
        return await self.send_custom(openid, "text", {"content": text})

    async def send_custom_news(self, openid: str, articles: list[Mapping[str, Any]]) -> dict[str, Any]:
        """Send a customer-service news message; articles have ``title, description, url, picurl``.

        The platform accepts one article per message (45008 otherwise).
        """
        return await self.send_custom(openid, "news", {"articles": [dict(a) for a in articles]})

    async def send_template(
        self, openid: str, template_id: str, data: Mapping[str, Any], url: str | None = None
    ) -> int:
        """Send a template message and return its ``msgid`` (matched later by TEMPLATESENDJOBFINISH).

        ``data`` values may be plain strings (wrapped as ``{"value": ...}``) or ``{"value", "color"}``.
        """
        body: dict[str, Any] = {"touser": openid, "template_id": template_id, "data": _wrap_values(data)}
        if url:
            body["url"] = url
        result = await self.request("POST", "/cgi-bin/message/template/send", json_body=body)
        return int(result["msgid"])

    async def send_subscribe(
        self, openid: str, template_id: str, data: Mapping[str, Any], page: str | None = None
    ) -> dict[str, Any]:
        """Send a 订阅通知 (``/cgi-bin/message/subscribe/bizsend``): ``{touser, template_id, page, data}``.

        ``page`` is the https URL the notice opens (for a 公众号 it is a web page; mini-program links
        would go in ``miniprogram``); ``data`` maps keyword fields to values (``{"thing1": "…"}``, wrapped
        as ``{"value": …}``). :class:`NoConsent` (43101) when the person gave no consent or a one-time
        consent is used up; :class:`InvalidArgument` (47003) when a value breaks its type's rule.
        """
        body: dict[str, Any] = {"touser": openid, "template_id": template_id, "data": _wrap_values(data)}
        if page:
            body["page"] = page
        return await self.request("POST", "/cgi-bin/message/subscribe/bizsend", json_body=body)

    async def mass_send_text(self, text: str, *, clientmsgid: str, tag_id: int | None = None) -> dict[str, Any]:
        """Mass-send a text to all followers (or to ``tag_id``); returns ``msg_id``/``msg_data_id``.

        ``clientmsgid`` makes a repeat within 24 h fail with errcode 45065 instead of sending twice.
        """
        flt: dict[str, Any] = {"is_to_all": True} if tag_id is None else {"is_to_all": False, "tag_id": tag_id}
        body = {"filter": flt, "msgtype": "text", "text": {"content": text}, "clientmsgid": clientmsgid,
                "send_ignore_reprint": 0}
        return await self.request("POST", "/cgi-bin/message/mass/sendall", json_body=body)

    # -- other APIs -----------------------------------------------------------------------------
    async def create_qrcode(self, scene: str, expire_seconds: int = 300) -> dict[str, Any]:
        """A temporary parameter QR code for ``scene`` (``QR_STR_SCENE``, 1-64 characters): returns
        ``{"ticket", "expire_seconds", "url"}``. Render ``url`` as a QR image (never fetch WeChat's image
        by ticket: the console must work without external resources). A scan arrives as a ``SCAN`` event
        with EventKey ``scene`` (or ``subscribe`` with ``qrscene_<scene>`` from a new follower)."""
        if not 1 <= len(scene) <= 64:
            raise ValueError(f"a QR scene is 1-64 characters (got {len(scene)})")
        body = {"expire_seconds": int(expire_seconds), "action_name": "QR_STR_SCENE",
                "action_info": {"scene": {"scene_str": scene}}}
        path = "/cgi-bin/qrcode/create"
        data = await self.request("POST", path, json_body=body)
        if not isinstance(data.get("url"), str) or not data["url"] or not isinstance(data.get("ticket"), str):
            raise WeChatTransportError("QR code answer without ticket/url", path)
        return data

    async def oauth_openid(self, code: str) -> str:
        """The openid of the person who opened a page through OAuth 网页授权 (``snsapi_base``): trades the
        ``code`` WeChat appended to the redirect for ``{access_token, openid, scope, …}`` at
        ``/sns/oauth2/access_token`` (appid and AppSecret, no access_token). A code works once and for 5
        minutes; a used, expired or made-up one raises :class:`WeChatError` with errcode 40029 (40163 when
        already used)."""
        path = "/sns/oauth2/access_token"
        data = await self._http("GET", path, params={"appid": self.appid, "secret": self._secret, "code": code,
                                                     "grant_type": "authorization_code"},
                                secret_values=(self._secret,))
        openid = data.get("openid")
        if not isinstance(openid, str) or not openid:
            raise WeChatError(None, "no openid in the OAuth answer", path)
        return openid

    async def create_menu(self, menu: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the custom menu (``{"button": [...]}``; 3 buttons, 5 sub-buttons each)."""
        return await self.request("POST", "/cgi-bin/menu/create", json_body=dict(menu))

    async def user_info(self, openid: str, lang: str = "zh_CN") -> dict[str, Any]:
        """A follower's basic information (``subscribe`` is 0 once the user unfollowed)."""
        return await self.request("GET", "/cgi-bin/user/info", params={"openid": openid, "lang": lang})

    async def get_media(self, media_id: str, *, max_bytes: int = 10_000_000) -> Media:
        """Download a temporary media file (``GET /cgi-bin/media/get?media_id=``): a voice message's
        AMR/Speex audio, for one. 40007 (invalid media_id) when it is unknown or older than 3 days."""
        return await self.download("/cgi-bin/media/get", {"media_id": media_id}, max_bytes=max_bytes)

    async def jsapi_ticket(self) -> tuple[str, int]:
        """A JS-SDK ticket (``GET /cgi-bin/ticket/getticket?type=jsapi``): ``(ticket, expires_in)``.

        Valid 7200 s and limited per day: share it (:class:`bot.jssdk.JsSdk` keeps it in the database)."""
        data = await self.request("GET", "/cgi-bin/ticket/getticket", params={"type": "jsapi"})
        ticket, expires_in = data.get("ticket"), data.get("expires_in")
        if not isinstance(ticket, str) or not ticket or not isinstance(expires_in, int | float):
            raise WeChatTransportError("ticket answer without ticket/expires_in", "/cgi-bin/ticket/getticket")
        return ticket, int(expires_in)


@dataclass(frozen=True)
class Media:
    """A downloaded media file."""

    content: bytes
    content_type: str
    filename: str = ""


def _wrap_values(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, Mapping) else {"value": str(v)} for k, v in data.items()}


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for value in secrets:
        if value:
            text = text.replace(value, "***")
    return text
