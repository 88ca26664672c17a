"""Core commands: serve, db, intents, chat, users, tickets."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from pathlib import Path

from sqlalchemy import func, select

from bot.commands.common import add_config, config_of, database, emit, run
from storage.models import KNOWN_ROLES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="运行机器人（WeChat 回调 + 页面 + 推送 + 定时任务）",
                       description="Run the bot: the WeChat callback, mobile pages, outbox sender and scheduler. "
                                   "Refuses to start (exit 2) on an outdated database schema, an empty "
                                   "wechat.token, or an empty, sample or short server.secret_key (a sample "
                                   "key is only warned about against the local fake WeChat API). Slow "
                                   "clients are timed out and connections capped by the server.* keys.")
    add_config(p)
    p.add_argument("--host", help="listen address (default: server.host)")
    p.add_argument("--port", type=int, help="listen port (default: server.port)")
    p.add_argument("--no-background", action="store_true",
                   help="do not run the outbox sender and scheduler in this process")
    p.add_argument("--with-fake-wechat", action="store_true",
                   help="also run the fake WeChat API on wechat.api_base (loopback only; local use), with the "
                        "config's templates and the demo's short openids")
    p.set_defaults(func=_serve)

    d = sub.add_parser("db", help="数据库：升级结构、查看版本", description="Database schema management (Alembic).")
    dsub = d.add_subparsers(dest="db_cmd", required=True)
    u = dsub.add_parser("upgrade", help="create or migrate the schema to the newest version")
    add_config(u)
    u.set_defaults(func=_db_upgrade)
    c = dsub.add_parser("current", help="print the schema version of the database and of this code")
    add_config(c)
    c.set_defaults(func=_db_current)

    i = sub.add_parser("intents", help="意图：检查 intents/*.yaml", description="Intent catalogue tools.")
    isub = i.add_subparsers(dest="intents_cmd", required=True)
    ic = isub.add_parser("check", help="validate intents/*.yaml: ALL problems with file, line and hint, and every "
                         "example run through the matcher (one that routes elsewhere is an error)")
    add_config(ic)
    ic.add_argument("--dir", type=Path, help="intents folder (default: bot.intents_dir)")
    ic.add_argument("--no-examples", action="store_true",
                    help="only validate the files (skip running every example through the matcher)")
    ic.set_defaults(func=_intents_check)
    im = isub.add_parser("match", help="show the dispatcher's decision for a text (route / suggest / fallback) "
                         "with confidence, candidates and signals")
    add_config(im)
    im.add_argument("text")
    im.add_argument("--role", action="append", default=[], help="pretend the user has this role")
    im.add_argument("--json", action="store_true",
                    help='print {"intent", "flow", "decision", "confidence", "candidates", …} as JSON')
    im.set_defaults(func=_intents_match)
    ie = isub.add_parser("eval", help="share of labelled messages the dispatcher routes to the right flow (a held-out "
                         "set such as tests/intents/routing_holdout.yaml), per flow, with the misses")
    add_config(ie)
    ie.add_argument("file", type=Path, help="YAML with messages: [{text, flow, role?, context?}, …]")
    ie.add_argument("--misses", action="store_true", help="list every message routed elsewhere")
    ie.add_argument("--json", action="store_true", help="print the whole result as JSON")
    ie.set_defaults(func=_intents_eval)

    ch = sub.add_parser("chat", help="终端聊天：以用户身份和机器人对话，或运行对话脚本",
                        description="Talk to the bot as a WeChat user. Messages are real signed XML (encrypted "
                                    "in safe mode) posted to --url, or to the app started in-process.")
    add_config(ch)
    ch.add_argument("--as", dest="openid", default="chat_user", help="your openid (default: chat_user)")
    ch.add_argument("--url", help="callback URL of a running server, e.g. http://127.0.0.1:8080/wechat")
    ch.add_argument("--script", type=Path, help="run a YAML conversation script and exit (non-zero on mismatch)")
    ch.set_defaults(func=_chat)

    us = sub.add_parser("users", help="用户：列表、角色、删除（注销）、导出", description="User administration.")
    usub = us.add_subparsers(dest="users_cmd", required=True)
    r = usub.add_parser("role", help="grant or revoke a role (" + ", ".join(KNOWN_ROLES) + ")",
                        description="admin: manages staff in the console (granting admin grants staff too; "
                                    "revoking staff revokes admin and ends the member's console sessions).")
    add_config(r)
    r.add_argument("openid")
    r.add_argument("role", choices=KNOWN_ROLES)
    r.add_argument("--remove", action="store_true")
    r.set_defaults(func=_users_role)
    ul = usub.add_parser("list", help="list users (newest first)")
    add_config(ul)
    ul.add_argument("--role")
    ul.add_argument("--limit", type=int, default=50)
    ul.add_argument("--json", action="store_true")
    ul.set_defaults(func=_users_list)
    from bot.commands.privacy import add_users_commands

    add_users_commands(usub)  # users erase / users export (个人信息保护)

    t = sub.add_parser("tickets", help="人工留言：查看、回复并关闭", description="Messages users left for staff (人工).")
    tsub = t.add_subparsers(dest="tickets_cmd", required=True)
    tl = tsub.add_parser("list", help="list open tickets")
    add_config(tl)
    tl.add_argument("--all", action="store_true", help="include closed tickets")
    tl.add_argument("--json", action="store_true")
    tl.set_defaults(func=_tickets_list)
    tr = tsub.add_parser("reply", help="answer a ticket (queued as a push to the user) and close it")
    add_config(tr)
    tr.add_argument("id", type=int)
    tr.add_argument("text")
    tr.set_defaults(func=_tickets_reply)


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from bot.app import build_runtime, create_app
    from bot.config import check_callback, check_secret_key
    from bot.httpserver import raise_file_limit, run

    cfg = config_of(args)
    logging.getLogger().setLevel(cfg.logging.level.upper())
    # Before anything listens: links signed with a sample key could be forged by anyone.
    check_callback(cfg)
    warning = check_secret_key(cfg)
    if warning:
        logging.getLogger("vetbot").warning("%s", warning)
    warning = raise_file_limit(cfg.server.max_connections)
    if warning:
        logging.getLogger("vetbot").warning("%s", warning)

    fake_at = _fake_address(cfg) if args.with_fake_wechat else None

    async def make() -> web.Application:
        runtime = await build_runtime(cfg)
        app = create_app(runtime, background=not args.no_background)
        # What start-up loaded (the Q&A engine's dictionaries and indexes: ~10^6 objects) lives as long as
        # the process; moved out of the collector's sight, full collections stop scanning it on every pass
        # (they cost tens of milliseconds each, straight into the reply latency of the turns waiting).
        gc.collect()
        gc.freeze()
        if fake_at is not None:
            from bot.fake_wechat import FakeWeChatServer

            async def fake_ctx(_: web.Application):  # type: ignore[no-untyped-def]
                from bot.fake_wechat import templates_of

                fake = await FakeWeChatServer(host=fake_at[0], port=fake_at[1], appid=cfg.wechat.appid).start()
                # The local demo: the config's templates are the account's (others get 40037, as on the
                # platform), and the README's short example ids (my_openid, staff_demo) are accepted.
                fake.state.add_templates(templates_of(cfg))
                fake.state.openid_rule = "demo"
                print(f"fake WeChat API on {fake.base_url}", flush=True)
                yield
                await fake.stop()

            app.cleanup_ctx.insert(0, fake_ctx)  # up before the outbox sender starts calling it

        async def _close(_: web.Application) -> None:
            await runtime.close()

        app.on_cleanup.append(_close)
        return app

    host, port = args.host or cfg.server.host, args.port or cfg.server.port
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass

    def listening() -> None:  # called once the socket listens, after start-up checks
        print(f"vetbot serving on http://{host}:{port}{cfg.server.path}", flush=True)

    # Not web.run_app: the listening socket's protocol factory enforces server.max_connections and the
    # request-head timeout (bot/httpserver.py).
    run(make(), host, port, on_listening=listening)
    return 0


def _fake_address(cfg: object) -> tuple[str, int]:
    from urllib.parse import urlparse

    from bot.config import ConfigError

    u = urlparse(cfg.wechat.api_base)  # type: ignore[attr-defined]
    if u.hostname not in ("127.0.0.1", "localhost", "::1") or not u.port:
        raise ConfigError(f"--with-fake-wechat needs wechat.api_base on loopback with a port "
                          f"(got {cfg.wechat.api_base!r}; e.g. http://127.0.0.1:8081)")  # type: ignore[attr-defined]
    return u.hostname, u.port


def _db_upgrade(args: argparse.Namespace) -> int:
    from storage.db import Database, head_revision, upgrade

    cfg = config_of(args)

    async def _ping() -> None:
        db = Database(cfg.database.url)
        try:
            await db.ping()
        finally:
            await db.close()

    run(_ping())
    upgrade(cfg.database.url)
    print(f"database schema is at {head_revision()}")
    return 0


def _db_current(args: argparse.Namespace) -> int:
    from storage.db import head_revision

    cfg = config_of(args)

    async def go() -> str | None:
        async with database(cfg, check=False) as db:
            await db.ping()
            return await db.current_revision()

    cur = run(go())
    print(f"database: {cur or '(empty)'}\ncode:     {head_revision()}")
    return 0 if cur == head_revision() else 1


def _intents_check(args: argparse.Namespace) -> int:
    from bot.app import known_flow_names
    from bot.intents import IntentMatcher, check_intents

    cfg = config_of(args)
    if args.dir:
        cfg.bot.intents_dir = str(args.dir.resolve())
    intents, errors = check_intents(cfg.path(cfg.bot.intents_dir), known_flow_names())
    for e in errors:
        print(f"error: {e}")
    checked = 0
    if intents and not args.no_examples:
        und = _understanding(cfg, IntentMatcher(intents, accept=cfg.bot.fuzzy_accept, suggest=cfg.bot.fuzzy_suggest))
        for intent, example, got in und.misrouted_examples():
            where = got.intent.id if got.intent is not None else (
                "a list: " + ", ".join(i.id for i in got.suggestions) if got.decision == "suggest" else "the fallback flow")
            print(f"error: {intent.file}:{intent.line}: intent '{intent.id}': example {example!r} routes to {where} "
                  f"(confidence {got.confidence:.2f}) (hint: reword it, add a negative, or move it)")
            errors.append(example)  # type: ignore[arg-type]
        checked = sum(len(i.examples) for i in intents)
    if errors:
        print(f"{len(errors)} problem(s) in {len(intents)} intents")
        return 1
    print(f"ok: {len(intents)} intents, {sum(len(i.examples) for i in intents)} examples"
          + (f" (all {checked} route to their own intent)" if checked else "")
          + f", {len({k for i in intents for k in i.menu_keys})} menu keys")
    return 0


def _understanding(cfg: object, matcher: object) -> object:
    """The dispatcher's understanding layer for ``matcher`` (loads the Q&A engine: seconds)."""
    from bot.app import understanding_of
    from flows.api import Services

    services = Services(config=cfg, clock=None)  # type: ignore[arg-type]
    return run(understanding_of(matcher, services))  # type: ignore[arg-type]


def _intents_match(args: argparse.Namespace) -> int:
    import json

    from bot.app import load_matcher

    cfg = config_of(args)
    und = _understanding(cfg, load_matcher(cfg))
    got = und.decide(args.text, set(args.role))  # type: ignore[attr-defined]
    if args.json:
        print(json.dumps(got.as_json(cfg.bot.fallback_flow), ensure_ascii=False))
        return 0
    if got.decision == "route" and got.intent is not None:
        print(f"route: {got.intent.id} -> flow {got.intent.flow} ({got.how}, confidence {got.confidence:.2f})"
              + (f" {got.slots}" if got.slots else ""))
    elif got.decision == "suggest":
        print("suggest: " + ", ".join(i.id for i in got.suggestions) + f" (confidence {got.confidence:.2f})")
    else:
        print(f"fallback -> flow {cfg.bot.fallback_flow} (confidence {got.confidence:.2f})")
    if got.candidates:
        print("candidates: " + ", ".join(f"{c} {p:.2f}" for c, p in got.candidates))
    if got.signals:
        print("signals of the top: " + ", ".join(f"{k} {v:.2f}" for k, v in got.signals.items())
              + ("" if got.used_encoder else " (encoder not needed)"))
    return 0


def _intents_eval(args: argparse.Namespace) -> int:
    import json

    from bot.app import load_matcher
    from bot.understanding import evaluate_routing
    from bot.yamlfile import YamlFileError, load_yaml

    cfg = config_of(args)
    try:
        doc = load_yaml(args.file)
    except (OSError, YamlFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    msgs = doc.get("messages") if isinstance(doc, dict) else None
    if not isinstance(msgs, list) or not all(isinstance(m, dict) and "text" in m and "flow" in m for m in msgs):
        print(f"error: {args.file}: expected a top-level 'messages' list of {{text, flow}} items", file=sys.stderr)
        return 2
    und = _understanding(cfg, load_matcher(cfg))
    res = evaluate_routing(und, msgs, cfg.bot.fallback_flow)  # type: ignore[arg-type]
    if args.json:
        print(json.dumps(res, ensure_ascii=False, indent=1))
        return 0
    print(f"routed to the right flow: {res['right']}/{res['total']} = {res['accuracy']:.1%}")
    for flow, score in res["per_flow"].items():
        print(f"  {flow:<22} {score}")
    if args.misses:
        for m in res["misses"]:
            print(f"  miss: {m['text']!r} want {m['want']} got {m['got']} ({m['confidence']})")
    return 0


def _chat(args: argparse.Namespace) -> int:
    from bot.chat import ScriptFailure, interactive, open_session, run_script

    cfg = config_of(args)

    async def go() -> int:
        chat = await open_session(cfg, args.url, fake_clock=bool(args.script))
        try:
            if args.script:
                try:
                    n = await run_script(chat, args.script)
                except ScriptFailure as e:
                    print(f"FAILED: {e}", file=sys.stderr)
                    return 1
                print(f"ok: {n} steps")
                return 0
            await interactive(chat, args.openid)
            return 0
        finally:
            await chat.close()

    return asyncio.run(go())


def _users_role(args: argparse.Namespace) -> int:
    from storage.models import User

    cfg = config_of(args)

    async def go() -> int:
        async with database(cfg) as db, db.session() as s:
            user = await s.get(User, args.openid)
            if user is None:
                print(f"vetbot: no user {args.openid!r} (they must write to the account first)", file=sys.stderr)
                return 2
            from bot.clock import SystemClock
            from storage.console import set_role

            await set_role(s, user, args.role, not args.remove, by=_cli_login(), via="cli", now=SystemClock().now())
            print(f"{user.openid}: roles = {user.roles or '(none)'}")
            return 0

    return run(go())


def _cli_login() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def _users_list(args: argparse.Namespace) -> int:
    from storage.models import User

    cfg = config_of(args)

    async def go() -> list[dict[str, object]]:
        async with database(cfg) as db, db.session() as s:
            q = select(User).order_by(User.first_seen.desc()).limit(args.limit)
            if args.role:
                q = q.where(User.roles.contains(args.role))
            return [{"openid": u.openid, "name": u.name, "phone": u.phone, "township": u.township,
                     "roles": u.roles, "subscribed": u.subscribed, "last_seen": u.last_seen}
                    for u in (await s.execute(q)).scalars()]

    rows = run(go())
    emit(rows, args.json, lambda rs: "\n".join(
        f"{r['openid']}\t{r['name'] or '-'}\t{r['township'] or '-'}\t{r['roles'] or '-'}"
        f"\t{'关注' if r['subscribed'] else '已取关'}" for r in rs) or "(no users)")
    return 0


def _tickets_list(args: argparse.Namespace) -> int:
    from storage.models import Ticket

    cfg = config_of(args)

    async def go() -> list[dict[str, object]]:
        async with database(cfg) as db, db.session() as s:
            q = select(Ticket).order_by(Ticket.id)
            if not args.all:
                q = q.where(Ticket.status == "open")
            rows = [{"id": t.id, "openid": t.openid, "text": t.text, "status": t.status, "created_at": t.created_at}
                    for t in (await s.execute(q)).scalars()]
            total = (await s.execute(select(func.count(Ticket.id)).where(Ticket.status == "open"))).scalar()
            return rows + ([] if args.json else [{"open": total}])

    rows = run(go())
    emit(rows, args.json, lambda rs: "\n".join(
        f"#{r['id']}\t{r['status']}\t{r['openid']}\t{r['text']}" if "id" in r else f"open: {r['open']}" for r in rs))
    return 0


def _tickets_reply(args: argparse.Namespace) -> int:
    from bot.clock import SystemClock
    from flows.tickets import TicketProblem, close, reply

    cfg = config_of(args)
    actor = f"cli:{os.environ.get('USER') or 'shell'}"[:64]

    async def go() -> int:
        now = SystemClock().now()
        async with database(cfg) as db, db.session() as s:
            try:
                await reply(s, args.id, args.text, staff=actor, via="cli", now=now)
                await close(s, args.id, staff=actor, via="cli", now=now, notify=False)
            except TicketProblem as e:
                print(f"vetbot: ticket #{args.id}: {e}", file=sys.stderr)
                return 2
        print(f"ticket #{args.id} closed; reply queued")
        return 0

    return run(go())
