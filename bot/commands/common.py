"""Helpers shared by command modules (config option, running a coroutine, opening the database)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from bot.config import Config, load_config
from storage.db import Database

T = TypeVar("T")


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default=None, help="config file (default: built-in defaults + VETBOT_* env)")


def config_of(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


@asynccontextmanager
async def database(cfg: Config, *, check: bool = True) -> AsyncIterator[Database]:
    """The configured database; by default refuses an outdated schema with the command to run."""
    db = Database(cfg.database.url, echo=cfg.database.echo, pool_size=cfg.database.pool_size,
                  sqlite_synchronous=cfg.database.sqlite_synchronous)
    try:
        if check:
            await db.check_schema()
        yield db
    finally:
        await db.close()


def emit(data: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    """Print ``data`` as JSON (``--json``) or as human text."""
    if as_json:
        json.dump(data, sys.stdout, ensure_ascii=False, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print(render(data))
