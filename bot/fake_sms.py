"""A fake SMS gateway on loopback: what tests and local demos send SMS to instead of a provider.

It checks the signature like a real relay should (``sms.hmac_header`` over the raw body with the shared
secret), keeps every message it took (``accepted``: the JSON bodies; ``keys``: their idempotency keys)
and can be told to fail (``fail_next``: HTTP statuses to answer with). Replies from members are the
other direction: :func:`bot.sms.inbound_request` builds them, ``vetbot sms simulate`` posts them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bot.sms import check_signature

__all__ = ["FakeSmsGateway"]


class FakeSmsGateway:
    """A loopback SMS gateway that checks the HMAC signature like a real relay would.

    ``accepted`` holds the JSON bodies it took; ``rejected`` the reasons it refused; ``fail_next``
    makes the next calls answer with the given HTTP statuses; ``on_message`` (optional) is called with
    each accepted body (``vetbot sms fake-gateway`` prints them).
    """

    def __init__(self, secret: str, header: str = "X-Vetbot-Signature",
                 on_message: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.secret, self.header = secret, header
        self.accepted: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self.rejected: list[str] = []
        self.fail_next: list[int] = []
        self.url = ""
        self.on_message = on_message
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.fail_next:
            return web.Response(status=self.fail_next.pop(0), text="injected")
        if not check_signature(self.secret, raw, request.headers.get(self.header)):
            self.rejected.append("bad signature")
            return web.Response(status=401, text="bad signature")
        try:
            body = json.loads(raw.decode("utf-8"))
        except ValueError:
            self.rejected.append("not json")
            return web.Response(status=400, text="not json")
        self.accepted.append(body)
        self.keys.append(request.headers.get("X-Vetbot-Idempotency-Key", ""))
        if self.on_message is not None:
            self.on_message(body)
        return web.json_response({"ok": True})

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeSmsGateway:
        """Listen on ``host:port`` (0: a free port); ``url`` is then the address to configure."""
        app = web.Application()
        app.router.add_post("/sms", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.url = f"http://{host}:{self._runner.addresses[0][1]}/sms"
        return self

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
