"""SMS on the web side: the inbound webhook (``POST /sms/inbound``).

Inbound: the SMS gateway posts each message a member sends to the bureau's number as signed JSON (see
:mod:`bot.sms`). A request is refused with 403 and records nothing unless its signature is right
(``sms.hmac_header`` over the raw body with ``sms.hmac_secret``) and its ``ts`` is within
``sms.inbound_window_s`` of now; inside the window a message id is remembered with the answer it
carried (:mod:`storage.sms`), so a retried or replayed webhook records nothing twice. What the message
does is :func:`flows.callup.sms.answer_by_sms`; the answer is ``{"ok": true, "outcome": …, "reply": …}``.

A call-up SMS links the member's answer page (``/r/<opaque token>``, :func:`bot.links.answer_links`),
the page every answer link opens; opened outside WeChat it asks for the last four digits of the phone on
file (:mod:`bot.web.viewer`), and an answer there is recorded ``via sms_link``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from bot.sms import check_signature
from flows.callup import service
from flows.callup.sms import answer_by_sms

log = logging.getLogger("vetbot.sms")

#: Longest message id and text taken (a real SMS is at most a few hundred characters).
MAX_ID, MAX_TEXT = 200, 2000


def _refuse(status: int, error: str) -> web.Response:
    return web.json_response({"ok": False, "error": error}, status=status)


def _message(raw: bytes) -> tuple[str, str, str, int] | str:
    """(id, from, text, ts) of an inbound body, or what is wrong with it."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "the body is not UTF-8 JSON"
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    mid, sender, text, ts = body.get("id"), body.get("from"), body.get("text"), body.get("ts")
    if not isinstance(mid, (str, int)) or isinstance(mid, bool) or not 0 < len(str(mid)) <= MAX_ID:
        return f'"id" (the gateway\'s message id, 1-{MAX_ID} characters) is missing'
    if not isinstance(sender, str) or not sender.strip():
        return '"from" (the sender\'s phone) is missing'
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        return f'"text" is missing or longer than {MAX_TEXT} characters'
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        return '"ts" (epoch seconds when the gateway received the message) is missing'
    return str(mid), sender, text, int(ts)


def setup(app: web.Application, runtime: Any) -> None:
    """Add ``POST /sms/inbound``."""
    cfg = runtime.config.sms
    if cfg.webhook_url and not cfg.hmac_secret:
        log.warning("sms.webhook_url is set but sms.hmac_secret is empty: SMS go out unsigned and members' "
                    "SMS replies (POST /sms/inbound) are all refused; set sms.hmac_secret")

    async def inbound(request: web.Request) -> web.Response:
        raw = await request.read()
        if not cfg.hmac_secret:
            log.error("inbound SMS refused: sms.hmac_secret is not set (nothing could be checked)")
            return _refuse(403, "inbound SMS is off: set sms.hmac_secret")
        if not check_signature(cfg.hmac_secret, raw, request.headers.get(cfg.hmac_header)):
            log.warning("inbound SMS refused: bad or missing %s", cfg.hmac_header)
            return _refuse(403, f"bad or missing {cfg.hmac_header}")
        msg = _message(raw)
        if isinstance(msg, str):
            return _refuse(400, msg)
        mid, sender, text, ts = msg
        now = runtime.clock.now()
        if abs(service.epoch(now) - ts) > cfg.inbound_window_s:
            log.warning("inbound SMS refused: ts is %+d s from now (window %g s)", ts - service.epoch(now),
                        cfg.inbound_window_s)
            return _refuse(403, f"ts is outside the {cfg.inbound_window_s:g} s window (a replay, or the "
                                "gateway's clock is wrong)")

        async def handle(s: Any) -> Any:
            return await answer_by_sms(s, runtime.services, mid, sender, text, now)

        r = await runtime.db.transaction(handle)
        log.info("inbound SMS: %s", r.outcome)
        return web.json_response({"ok": True, "outcome": r.outcome, "reply": r.reply})

    app.router.add_post("/sms/inbound", inbound)
