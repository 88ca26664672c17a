"""``vetbot menu push|show``: the WeChat custom menu from the ``menu:`` section (or a file).

The menu is checked here first, with the platform's limits (3 buttons, 5 sub-buttons each, name
sizes in bytes, key/url per button type), so a mistake is reported with its place instead of a bare
WeChat errcode; click keys that no intent answers are reported too (the bot would reply
"该菜单暂未开通").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bot.commands.common import add_config, config_of, database, run

HELP = """\
Push the custom menu to WeChat (/cgi-bin/menu/create). The menu comes from the `menu:` section of
the config, or from --file (YAML or JSON: {"button": [...]}, or a document with a `menu:` key).

  vetbot menu show -c vetbot.yaml                  # check it and print the JSON that would be sent
  vetbot menu push -c vetbot.yaml
  vetbot menu push -c vetbot.yaml --file menu.yaml
"""

LEAF_TYPES = frozenset({
    "click", "view", "scancode_push", "scancode_waitmsg", "pic_sysphoto", "pic_photo_or_album", "pic_weixin",
    "location_select", "media_id", "view_limited", "article_id", "article_view_limited", "miniprogram",
})
KEY_TYPES = frozenset({"click", "scancode_push", "scancode_waitmsg", "pic_sysphoto", "pic_photo_or_album",
                       "pic_weixin", "location_select"})


class MenuError(Exception):
    """A menu that WeChat would refuse; the message names the button."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``vetbot menu push|show``."""
    p = sub.add_parser("menu", help="自定义菜单：检查并推送到微信", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    msub = p.add_subparsers(dest="menu_cmd", required=True)
    for name, fn, what in (("push", _push, "check the menu and create it on WeChat"),
                           ("show", _show, "check the menu and print the JSON body")):
        c = msub.add_parser(name, help=what, description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_config(c)
        c.add_argument("--file", type=Path, help="menu file (YAML or JSON) instead of the config's menu: section")
        c.set_defaults(func=fn)


def load_menu(cfg_menu: dict[str, Any], file: Path | None) -> dict[str, Any]:
    """The menu body from ``--file`` or the config; raise MenuError when there is none."""
    if file is None:
        menu = cfg_menu
        where = "config menu:"
    else:
        import yaml

        from bot.yamlfile import UniqueKeyLoader

        where = str(file)
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise MenuError(f"{file}: file not found") from None
        except UnicodeDecodeError:
            raise MenuError(f"{file}: not UTF-8 text (save the file as UTF-8)") from None
        try:
            menu = yaml.load(text, Loader=UniqueKeyLoader)  # JSON is YAML too; duplicate keys refused
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise MenuError(f"{file}{line}: not valid YAML/JSON ({getattr(e, 'problem', e)})") from None
        if isinstance(menu, dict) and "menu" in menu and "button" not in menu:
            menu = menu["menu"]
    if not menu:
        raise MenuError(f"{where} no menu defined (add a `menu:` section with `button:` or use --file)")
    if not isinstance(menu, dict) or not isinstance(menu.get("button"), list):
        raise MenuError(f"{where} the menu must be a mapping with a `button:` list")
    validate_menu(menu)
    return {"button": menu["button"]}


def _nbytes(s: Any) -> int:
    return len(str(s).encode("utf-8"))


def validate_menu(menu: dict[str, Any]) -> None:
    """Check WeChat's menu rules; raise MenuError naming the first bad button."""
    buttons = menu.get("button")
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
        raise MenuError(f"the menu needs 1 to 3 top-level buttons (has {len(buttons) if isinstance(buttons, list) else 0})")
    for i, b in enumerate(buttons, 1):
        where = f"button {i}"
        if not isinstance(b, dict):
            raise MenuError(f"{where}: must be a mapping (name, type, key/url or sub_button)")
        subs = b.get("sub_button")
        if subs:
            name = b.get("name")
            if not isinstance(name, str) or not name.strip():
                raise MenuError(f"{where}: needs a name")
            where = f"button {i} ({name})"
            if _nbytes(name) > 16:
                raise MenuError(f"{where}: name is {_nbytes(name)} bytes; WeChat allows 16 (about 5 Chinese characters)")
            if not isinstance(subs, list) or len(subs) > 5:
                raise MenuError(f"{where}: at most 5 sub-buttons")
            for j, s in enumerate(subs, 1):
                _leaf(s, f"{where} > sub-button {j}", 60)
        else:
            _leaf(b, where, 16)


def _leaf(b: Any, where: str, name_bytes: int) -> None:
    if not isinstance(b, dict):
        raise MenuError(f"{where}: must be a mapping (type, name, key or url)")
    name = b.get("name")
    if not isinstance(name, str) or not name.strip():
        raise MenuError(f"{where}: needs a name")
    where = f"{where} ({name})"
    if _nbytes(name) > name_bytes:
        raise MenuError(f"{where}: name is {_nbytes(name)} bytes; WeChat allows {name_bytes}")
    kind = b.get("type")
    if kind not in LEAF_TYPES:
        raise MenuError(f"{where}: type {kind!r} is not a menu type ({', '.join(sorted(LEAF_TYPES))})")
    if kind in KEY_TYPES:
        key = b.get("key")
        if not isinstance(key, str) or not key or _nbytes(key) > 128:
            raise MenuError(f"{where}: type {kind} needs a key of 1-128 bytes")
    if kind in ("view", "miniprogram"):
        url = b.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or _nbytes(url) > 1024:
            raise MenuError(f"{where}: type {kind} needs an http(s) url of at most 1024 bytes")
    if kind == "miniprogram" and not (b.get("appid") and b.get("pagepath")):
        raise MenuError(f"{where}: type miniprogram needs appid and pagepath")
    if kind in ("media_id", "view_limited") and not b.get("media_id"):
        raise MenuError(f"{where}: type {kind} needs a media_id")
    if kind in ("article_id", "article_view_limited") and not b.get("article_id"):
        raise MenuError(f"{where}: type {kind} needs an article_id")


def click_keys(menu: dict[str, Any]) -> list[str]:
    """Every click key in the menu, in order."""
    out = []
    for b in menu["button"]:
        for leaf in b.get("sub_button") or [b]:
            if leaf.get("type") == "click":
                out.append(leaf["key"])
    return out


def _unanswered_keys(cfg: Any, menu: dict[str, Any]) -> list[str]:
    from bot.app import load_matcher

    matcher = load_matcher(cfg)
    return [k for k in click_keys(menu) if matcher.by_menu_key(k) is None]


def _prepare(args: argparse.Namespace) -> tuple[Any, dict[str, Any]] | None:
    cfg = config_of(args)
    try:
        menu = load_menu(cfg.menu, args.file)
    except MenuError as e:
        print(f"vetbot: menu: {e}", file=sys.stderr)
        return None
    missing = _unanswered_keys(cfg, menu)
    if missing:
        print(f"vetbot: warning: no intent has menu_keys {', '.join(missing)}; the bot will answer "
              "“该菜单暂未开通” for them (add them to an intent's menu_keys in intents/*.yaml)", file=sys.stderr)
    return cfg, menu


def _show(args: argparse.Namespace) -> int:
    prepared = _prepare(args)
    if prepared is None:
        return 2
    print(json.dumps(prepared[1], ensure_ascii=False, indent=2))
    return 0


def _push(args: argparse.Namespace) -> int:
    from bot.outbox import build_client
    from bot.wechat_api import WeChatError

    prepared = _prepare(args)
    if prepared is None:
        return 2
    cfg, menu = prepared

    async def go() -> None:
        async with database(cfg) as db:
            client = build_client(cfg, db)
            try:
                await client.create_menu(menu)
            finally:
                await client.close()

    try:
        run(go())
    except WeChatError as e:
        print(f"vetbot: WeChat refused the menu: {e}", file=sys.stderr)
        return 2
    n = sum(len(b.get("sub_button") or [b]) for b in menu["button"])
    print(f"菜单已推送：{len(menu['button'])} 个主菜单，{n} 个按钮（menu created）")
    return 0
