"""``vetbot fake-wechat``: run the fake WeChat API server (tests, benchmarks, local demos).

Also runnable without the CLI: ``python -m bot.commands.fake_wechat --port 8081``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

DESCRIPTION = """\
在本机运行一个假的微信公众平台 API 服务器，供测试、压测和本地演示使用，绝不访问真实微信。
它按平台规则发放 access_token（stable_token 与经典 token 接口），实现客服消息、模板消息、订阅通知、
群发、自定义菜单、用户信息、临时素材下载和 JS-SDK ticket 接口，并返回与真实微信相同的 errcode/errmsg。
模板消息和订阅通知按 2023 年起的规则校验和展示（调用记录里的 rendered：不显示 first/remark，
每个字段最多 20 字），不合规的值返回 47003。

控制接口（不计入调用记录）：
  GET  /__fake__/calls?path=&since=   查看记录的调用（含请求体）
  GET  /__fake__/stats                按接口统计调用次数和错误码
  POST /__fake__/faults               注入故障：{"path", "errcode", "status", "delay_ms", "drop", "count"}
  POST /__fake__/users                设置用户状态：{"<openid>": {"followed": false, "kefu_window": false,
                                      "subscribe": {"<订阅通知模板ID>": "accept"}}}
  POST /__fake__/templates            登记公众号的模板（登记后其他模板 ID 返回 40037）
  POST /__fake__/subscribe            用户在订阅通知弹窗里的选择：{"openid", "templates": {"<ID>": "accept"}}，
                                      返回平台推送给机器人的事件 XML
  POST /__fake__/media                登记临时素材（语音）：{"media_id", "base64"}
  POST /__fake__/jssdk/verify         像微信客户端一样校验 wx.config 签名
  POST /__fake__/config               修改配置，如 {"latency_ms": 20}
  POST /__fake__/clock                拨快时钟：{"advance": 7200}
  POST /__fake__/reset                清空调用、故障、用户和令牌

让机器人使用它：把配置里的微信 API 地址设为 http://<host>:<port>。"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``fake-wechat`` sub-command."""
    p = sub.add_parser(
        "fake-wechat",
        help="运行本地假微信 API 服务器（测试和本地演示用）",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="监听地址（默认 127.0.0.1，只对本机开放）")
    p.add_argument("--port", type=int, default=8081, help="监听端口（默认 8081）")
    p.add_argument("--latency-ms", type=float, default=0, help="每次 API 调用的模拟延迟，毫秒（默认 0）")
    p.add_argument("--appid", default="wx0000000000000000", help="接受的 AppID（默认 wx0000000000000000）")
    p.add_argument("--secret", default=None, help="要求的 AppSecret（默认接受任意值）")
    p.add_argument("-c", "--config", default=None,
                   help="登记这个 vetbot 配置里的模板（templates:），其他模板 ID 返回 40037")
    p.add_argument("--openid-rule", choices=("strict", "demo"), default="strict",
                   help="strict：openid 须为 16-64 位字母数字_-（默认）；demo：也接受演示用的短 ID（如 my_openid）")
    p.set_defaults(func=run)


async def _serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from bot.fake_wechat import STATE_KEY, create_app, templates_of

    app = create_app(latency_ms=args.latency_ms, appid=args.appid, secret=args.secret)
    state = app[STATE_KEY]
    state.openid_rule = getattr(args, "openid_rule", "strict")
    if getattr(args, "config", None):
        from bot.config import load_config

        state.add_templates(templates_of(load_config(args.config)))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, args.host, args.port, backlog=1024).start()
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        print(
            f"假微信 API 服务器已启动：http://{shown}:{port}  appid={args.appid}  延迟 {args.latency_ms:g} ms"
            "（控制接口见 /__fake__/...，Ctrl-C 退出）",
            flush=True,
        )
        stop = asyncio.Event()
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM; returns the exit status. ``--port 0`` picks a free port."""
    if args.latency_ms < 0:
        print("--latency-ms 不能为负数", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"无法监听 {args.host}:{args.port}：{exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m bot.commands.fake_wechat``)."""
    parser = argparse.ArgumentParser(prog="vetbot")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fake-wechat", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
