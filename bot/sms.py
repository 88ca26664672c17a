"""SMS through a generic HTTP webhook: the last channel for members WeChat cannot reach.

The bureau's SMS provider (or a small relay in front of it) receives one POST per message:

* the body is ``sms.body_template`` (JSON) with ``{placeholders}`` replaced inside its strings:
  ``{phone}``, ``{text}`` (the push text, plus its link when it has one), ``{url}``, ``{title}``,
  ``{purpose}``, ``{key}`` (the outbox idempotency key) and any field of the push's ``data``;
* ``sms.hmac_header`` (default ``X-Vetbot-Signature``) carries ``sha256=<hex HMAC-SHA256 of the raw
  body with sms.hmac_secret>``, so the gateway can refuse forged requests;
* ``X-Vetbot-Idempotency-Key`` carries the outbox key: delivery is at-least-once, and a gateway
  that remembers keys can drop the rare repeat after a crash.

Any 2xx answer means accepted. 5xx, 408, 429, timeouts and dropped connections are transient (the
outbox retries later); other 4xx answers are permanent (a wrong URL or secret does not heal).

Inbound (a member's reply, ``POST /sms/inbound``, :mod:`bot.web.sms`): the gateway posts the JSON
``{"id": "<its message id>", "from": "<sender phone>", "text": "<the message>", "ts": <epoch seconds>}``
signed the same way (``sms.hmac_header: sha256=<hex HMAC-SHA256 of the raw body with sms.hmac_secret>``).
:func:`inbound_request` builds such a request (``vetbot sms simulate``, tests); :func:`check_signature`
checks one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

import aiohttp

from bot.config import ConfigError, SmsConfig

__all__ = ["SmsClient", "SmsError", "check_signature", "inbound_request", "parse_body_template", "render_body",
           "sign"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class SmsError(Exception):
    """The SMS webhook did not accept a message. ``transient`` says whether a retry may succeed."""

    def __init__(self, message: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


def parse_body_template(template: str) -> Any:
    """Parse ``sms.body_template``; raise ConfigError (with the fix) when it is not JSON."""
    try:
        parsed = json.loads(template)
    except ValueError as e:
        raise ConfigError(f"sms.body_template is not valid JSON ({e}); example: "
                          '{"phone": "{phone}", "text": "{text}"}') from None
    found = set(_PLACEHOLDER.findall(template))
    if "phone" not in found or "text" not in found:
        raise ConfigError("sms.body_template must contain both {phone} and {text}")
    return parsed


def render_body(template: Any, values: Mapping[str, Any]) -> Any:
    """Fill ``{name}`` placeholders inside every string of the parsed template (unknown ones → "")."""
    if isinstance(template, str):
        return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), "") or ""), template)
    if isinstance(template, list):
        return [render_body(v, values) for v in template]
    if isinstance(template, dict):
        return {k: render_body(v, values) for k, v in template.items()}
    return template


def sign(secret: str, body: bytes) -> str:
    """The signature header value: ``sha256=<hex HMAC-SHA256(secret, body)>``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def check_signature(secret: str, body: bytes, header_value: str | None) -> bool:
    """Whether ``header_value`` is the signature of ``body`` with ``secret`` (constant time; an empty
    secret checks nothing and so accepts nothing)."""
    if not secret or not header_value:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header_value.strip().encode())


def inbound_request(secret: str, phone: str, text: str, *, message_id: str, ts: int,
                    header: str = "X-Vetbot-Signature") -> tuple[bytes, dict[str, str]]:
    """The body and headers an SMS gateway posts to ``/sms/inbound`` for one received message."""
    body = json.dumps({"id": message_id, "from": phone, "text": text, "ts": ts}, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")
    return body, {"Content-Type": "application/json; charset=utf-8", header: sign(secret, body)}


class SmsClient:
    """Posts SMS messages to ``sms.webhook_url``. ``enabled`` is False when no URL is configured."""

    def __init__(self, cfg: SmsConfig, *, session: aiohttp.ClientSession | None = None) -> None:
        self.cfg = cfg
        self.enabled = bool(cfg.webhook_url)
        self._template = parse_body_template(cfg.body_template) if self.enabled else None
        self._session = session
        self._own = session is None
        self._timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)

    def body(self, phone: str, text: str, extra: Mapping[str, Any] | None = None) -> bytes:
        """The exact bytes that will be posted (and signed)."""
        values = {**(extra or {}), "phone": phone, "text": text}
        rendered = render_body(self._template, values)
        return json.dumps(rendered, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    async def send(self, phone: str, text: str, *, key: str = "", extra: Mapping[str, Any] | None = None) -> None:
        """Post one message; raise :class:`SmsError` unless the gateway answers 2xx."""
        if not self.enabled:
            raise SmsError("no sms.webhook_url configured", transient=False)
        body = self.body(phone, text, {**(extra or {}), "key": key})
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if key:
            headers["X-Vetbot-Idempotency-Key"] = key
        if self.cfg.hmac_secret:
            headers[self.cfg.hmac_header] = sign(self.cfg.hmac_secret, body)
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own = True
        try:
            async with self._session.post(self.cfg.webhook_url, data=body, headers=headers,
                                          timeout=self._timeout) as resp:
                status = resp.status
                snippet = (await resp.read())[:120].decode("utf-8", errors="replace")
        except TimeoutError:
            raise SmsError(f"no answer within {self.cfg.timeout_s:g} s", transient=True) from None
        except aiohttp.ClientError as e:
            raise SmsError(f"{type(e).__name__}: {e}", transient=True) from None
        if 200 <= status < 300:
            return
        transient = status >= 500 or status in (408, 429)
        raise SmsError(f"HTTP {status} {snippet.strip()}".strip(), transient=transient, status=status)

    async def close(self) -> None:
        """Close the HTTP session if this client opened it."""
        if self._own and self._session is not None and not self._session.closed:
            await self._session.close()
