"""`vetbot sms`: try the inbound SMS webhook as the SMS gateway would call it."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

from bot.commands.common import add_config, config_of, run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sms", help="短信：模拟队员回复短信（入站短信接口）",
                       description="SMS for roster members without WeChat (see README \"SMS\").")
    psub = p.add_subparsers(dest="sms_cmd", required=True)
    sim = psub.add_parser(
        "simulate", help="post a signed inbound SMS to /sms/inbound, as the SMS gateway would",
        description="Signs the message with sms.hmac_secret (header sms.hmac_header) and posts it to a running "
                    "`vetbot serve`; prints what the bot did (recorded / unknown / unclear / closed / duplicate) "
                    "and the reply it queued by SMS. Sending the same --id twice records nothing the second time.")
    add_config(sim)
    sim.add_argument("--from", dest="sender", required=True, metavar="PHONE", help="the sender's phone, e.g. 13900000001")
    sim.add_argument("text", help="the message, e.g. 去不了")
    sim.add_argument("--id", default=None, help="the gateway's message id (default: a new random one)")
    sim.add_argument("--url", default=None, help="the webhook (default: server.public_url + /sms/inbound)")
    sim.add_argument("--ts", type=int, default=None, help="epoch seconds the message was received (default: now)")
    sim.add_argument("--json", action="store_true")
    sim.set_defaults(func=_simulate)

    gw = psub.add_parser(
        "fake-gateway", help="run a fake SMS gateway on this machine that prints every SMS vetbot sends",
        description="For demos and tests, never a provider: listens on --host:--port, checks each message's "
                    "signature with sms.hmac_secret like a real relay should (401 when wrong), and prints it. "
                    "Point sms.webhook_url at the address it prints. Stop with Ctrl-C.")
    add_config(gw)
    gw.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1: this machine only)")
    gw.add_argument("--port", type=int, default=9000, help="listen port (default 9000)")
    gw.set_defaults(func=_fake_gateway)


def _simulate(args: argparse.Namespace) -> int:
    import aiohttp

    from bot.sms import inbound_request

    cfg = config_of(args)
    if not cfg.sms.hmac_secret:
        print("error: sms.hmac_secret is not set: the bot refuses every inbound SMS without it "
              "(set it in the config or VETBOT_SMS__HMAC_SECRET)", file=sys.stderr)
        return 2
    url = args.url or cfg.server.public_url.rstrip("/") + "/sms/inbound"
    body, headers = inbound_request(cfg.sms.hmac_secret, args.sender, args.text, message_id=args.id or uuid.uuid4().hex,
                                    ts=args.ts if args.ts is not None else int(time.time()), header=cfg.sms.hmac_header)

    async def go() -> tuple[int, str]:
        async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers,
                                                         timeout=aiohttp.ClientTimeout(total=30)) as resp:
            return resp.status, await resp.text()

    try:
        status, text = run(go())
    except (aiohttp.ClientError, TimeoutError) as e:
        print(f"error: could not reach {url} ({type(e).__name__}: {e}); is `vetbot serve` running?", file=sys.stderr)
        return 1
    try:
        answer = json.loads(text)
    except ValueError:
        answer = {"ok": False, "error": text[:200]}
    if args.json:
        print(json.dumps({"status": status, **answer}, ensure_ascii=False, indent=2))
    elif status == 200:
        print(f"{answer.get('outcome')}" + (f"\nreply by SMS: {answer['reply']}" if answer.get("reply") else ""))
    else:
        print(f"refused (HTTP {status}): {answer.get('error', '')}", file=sys.stderr)
    return 0 if status == 200 else 1


def _fake_gateway(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib

    from bot.fake_sms import FakeSmsGateway

    cfg = config_of(args)
    if not cfg.sms.hmac_secret:
        print("error: set sms.hmac_secret (the gateway checks every message's signature with it)", file=sys.stderr)
        return 2

    def show(body: dict) -> None:  # type: ignore[type-arg]
        print(f"SMS to {body.get('phone', '?')}: {body.get('text', '')}", flush=True)

    async def go() -> None:
        gw = await FakeSmsGateway(cfg.sms.hmac_secret, cfg.sms.hmac_header, on_message=show).start(args.host, args.port)
        print(f"fake SMS gateway at {gw.url} (set sms.webhook_url to it); Ctrl-C stops it", file=sys.stderr, flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await gw.stop()

    with contextlib.suppress(KeyboardInterrupt):
        run(go())
    return 0
