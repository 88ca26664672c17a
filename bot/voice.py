"""Voice messages WeChat did not transcribe: download the audio and ask a pluggable recogniser.

WeChat's ``Recognition`` field (its own speech-to-text) is being retired and already arrives empty
for some accounts, while many of our users (over sixty) speak rather than type. With
``speech.webhook_url`` set, a voice message without Recognition goes through :class:`VoicePipeline`:

1. ``GET /cgi-bin/media/get?media_id=`` downloads the voice (AMR or Speex, at most ``speech.max_bytes``);
2. the bytes are POSTed to the recogniser (``Content-Type: audio/amr`` or ``audio/speex``,
   ``X-Vetbot-Format``, ``X-Vetbot-Idempotency-Key`` = the message's dedup key, and the HMAC header
   ``<speech.hmac_header>: sha256=<hex HMAC-SHA256 of the body>`` as for SMS); it answers JSON
   ``{"text": "..."}`` within ``speech.timeout_s``;
3. the turn then runs with the text (``inbound.extra["voice"] = "webhook"``), or, when nothing came
   back, as a voice without text (``"failed"``: counted, and a hint once a day, see
   :mod:`flows.voice`).

All of this happens before the turn, outside its transaction and the user's lock: a slow recogniser
never holds the database (on SQLite, every other user's turn). The gateway still owns the deadline:
it waits ``server.reply_budget_s`` for the future :meth:`VoicePipeline.start` returns; past it, it
answers WeChat ``success`` and the turn, started later with ``control.late`` set, sends its reply
through the outbox (a customer-service message: the person just wrote, so the window is open).
Neither the audio nor the recognised text is ever logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp

from bot.config import Config, SpeechConfig
from bot.sms import sign
from bot.wechat_api import WeChatClient, WeChatError
from flows.api import Inbound

log = logging.getLogger("vetbot.voice")

__all__ = ["SpeechClient", "SpeechError", "VoicePipeline"]

#: Recognised text longer than this is cut (a voice message is at most 60 s).
MAX_TEXT = 500


class SpeechError(Exception):
    """The recogniser gave no text (timeout, HTTP error, a body that is not ``{"text": ...}``)."""


class SpeechClient:
    """Posts audio to ``speech.webhook_url`` and returns the recognised text."""

    def __init__(self, cfg: SpeechConfig, *, session: aiohttp.ClientSession | None = None) -> None:
        self.cfg = cfg
        self._session = session
        self._own = session is None
        self._timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)

    async def recognise(self, audio: bytes, fmt: str, *, key: str = "") -> str:
        """The text of ``audio`` ("" when the recogniser heard nothing); :class:`SpeechError` otherwise."""
        fmt = (fmt or "amr").lower()
        headers = {"Content-Type": f"audio/{'speex' if fmt == 'speex' else 'amr'}", "X-Vetbot-Format": fmt}
        if key:
            headers["X-Vetbot-Idempotency-Key"] = key
        if self.cfg.hmac_secret:
            headers[self.cfg.hmac_header] = sign(self.cfg.hmac_secret, audio)
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own = True
        try:
            async with self._session.post(self.cfg.webhook_url, data=audio, headers=headers,
                                          timeout=self._timeout) as resp:
                status = resp.status
                raw = await resp.content.read(64 * 1024)
        except TimeoutError:
            raise SpeechError(f"no answer within {self.cfg.timeout_s:g} s") from None
        except aiohttp.ClientError as e:
            raise SpeechError(f"{type(e).__name__}") from None
        if not 200 <= status < 300:
            raise SpeechError(f"HTTP {status}")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise SpeechError("answer is not JSON") from None
        text = data.get("text") if isinstance(data, dict) else None
        if not isinstance(text, str):
            raise SpeechError('answer has no "text"')
        return text.strip()[:MAX_TEXT]

    async def close(self) -> None:
        """Close the HTTP session if this client opened it."""
        if self._own and self._session is not None and not self._session.closed:
            await self._session.close()


class VoicePipeline:
    """Turns a voice message into a turn with text (see the module docstring).

    ``client`` is the WeChat API client (media download); ``speech`` the recogniser. Both default to
    the configured ones. One recognition per message at a time: a WeChat retry of a message still being
    recognised waits for the same result.
    """

    def __init__(self, config: Config, client: WeChatClient, speech: SpeechClient | None = None) -> None:
        self.config = config
        self.client = client
        self.speech = speech or SpeechClient(config.speech)
        self._inflight: dict[str, asyncio.Future[str | None]] = {}

    @classmethod
    def build(cls, config: Config, db: Any) -> VoicePipeline:
        """The pipeline of a running bot: the WeChat client shares the token through the database."""
        from bot.outbox import build_client

        return cls(config, build_client(config, db))

    def start(self, dispatcher: Any, openid: str, inbound: Inbound, dedup_key: str,
              control: Any) -> asyncio.Future[str | None]:
        """Recognise, then start the turn; the future resolves with its passive reply like
        :meth:`bot.dispatcher.Dispatcher.start`'s."""
        running = self._inflight.get(dedup_key)
        if running is not None and not running.done():
            return running
        fut = asyncio.ensure_future(self._run(dispatcher, openid, inbound, dedup_key, control))
        self._inflight[dedup_key] = fut
        fut.add_done_callback(lambda _f: self._inflight.pop(dedup_key, None))
        return fut

    async def recognise(self, inbound: Inbound, key: str) -> str:
        """The text of a voice message ("" when none came out); never raises for a bad recognition."""
        media_id = str(inbound.extra.get("media_id") or "")
        if not media_id:
            return ""
        try:
            media = await self.client.get_media(media_id, max_bytes=self.config.speech.max_bytes)
            return await self.speech.recognise(media.content, str(inbound.extra.get("format") or "amr"), key=key)
        except (WeChatError, SpeechError) as e:
            log.warning("voice message not recognised: %s: %s", type(e).__name__, e)
            return ""

    async def _run(self, dispatcher: Any, openid: str, inbound: Inbound, key: str, control: Any) -> str | None:
        text = await self.recognise(inbound, key)
        extra = {**inbound.extra, "voice": "webhook" if text else "failed"}
        turn = Inbound(kind="text", text=text, msg_id=inbound.msg_id, created_at=inbound.created_at, extra=extra) \
            if text else Inbound(kind="voice", msg_id=inbound.msg_id, created_at=inbound.created_at, extra=extra)
        return await dispatcher.start(openid, turn, key, control)

    async def close(self) -> None:
        """Close the HTTP clients."""
        await self.speech.close()
        await self.client.close()
