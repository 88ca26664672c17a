"""Floors for bench/webhook.py: how fast the layers under a turn go on this machine, in the same run.

    python bench/floors.py aiohttp PORT    # aiohttp + uvloop, one POST handler: read the body, answer "success"
    python bench/floors.py gateway PORT    # vetbot's real app with every turn answered at once (no database work)

``gateway`` is `vetbot serve`'s app (same config from VETBOT_* variables, same routes, signature check,
wechatpy parse and reply) with ``Dispatcher.start`` replaced by an already-finished future carrying a
menu-sized reply. The gap between the two rows and the real server is roughly what the turns cost
(intent matching, flows, the core rows, the commit), plus the gateway's wait for an unfinished turn
(a timer and a callback, ~15 µs) and the difference between this fixed reply and the real ones. The
rows run one after another on a VM whose speed drifts: compare them within one run, and repeat it.
Not part of vetbot.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REPLY = "【退役军人服务】请回复数字：\n1. 政策问答\n2. 云端祭英烈\n3. 老兵招聘会\n4. 我的信息\n回复“人工”给工作人员留言。"


def aiohttp_app() -> Any:
    from aiohttp import web

    async def post(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="success")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", post)
    return app


async def gateway_app() -> Any:
    from bot.app import build_runtime, create_app
    from bot.config import load_config
    from bot.dispatcher import Dispatcher

    def start(self: Dispatcher, openid: str, inbound: Any, key: str, control: Any = None) -> asyncio.Future[str]:
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        done.set_result(REPLY)
        return done

    Dispatcher.start = start  # type: ignore[method-assign]
    runtime = await build_runtime(load_config(ROOT / "config.example.yaml", dict(os.environ)))
    app = create_app(runtime, background=False)
    gc.collect()
    gc.freeze()  # as `vetbot serve` does
    return app


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in ("aiohttp", "gateway"):
        raise SystemExit(__doc__)
    from aiohttp import web

    try:
        import uvloop  # as `vetbot serve` does when it is installed

        uvloop.install()
    except ImportError:
        pass
    app = aiohttp_app() if sys.argv[1] == "aiohttp" else gateway_app()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=None, print=None)


if __name__ == "__main__":
    main()
