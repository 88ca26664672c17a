"""`vetbot` command line. Sub-commands live in :mod:`bot.commands` (one module each, discovered).

Every command that fails for a reason the operator can fix prints one line to stderr and exits 2;
no traceback reaches the terminal for configuration, content-file or database problems.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from bot.config import ConfigError
from bot.yamlfile import YamlFileError


def build_parser() -> argparse.ArgumentParser:
    import bot.commands

    parser = argparse.ArgumentParser(
        prog="vetbot",
        description="退役军人事务局微信公众号机器人：政策问答、云端祭英烈、招聘推送、应急集结。",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(bot.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"bot.commands.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    from bot.logsafe import configure

    configure(logging.DEBUG if args.verbose else logging.INFO)  # masks phones, cuts SQL parameters
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from flows.api import FlowError
    from storage.db import DatabaseUnavailable, SchemaOutdated

    try:
        code = args.func(args)
    except (ConfigError, YamlFileError, SchemaOutdated, DatabaseUnavailable, FlowError) as e:
        print(f"vetbot: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code or 0)


if __name__ == "__main__":  # pragma: no cover
    main()
