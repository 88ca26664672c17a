"""Shared fixtures.

``db`` runs every storage test twice: on SQLite (a fresh file) and on PostgreSQL (a fresh database
cloned from a migrated template). PostgreSQL comes from ``VETBOT_TEST_PG_URL`` (default: the local
server with trust auth). Under ``CI=true`` a missing PostgreSQL fails the run; elsewhere it skips.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bot.clock import FakeClock
from bot.config import Config, load_config
from storage.db import Database, upgrade

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("VETBOT_SHARED", ROOT.parent / "shared"))
CONFORMANCE = SHARED / "wechat-conformance"
PG_URL = os.environ.get("VETBOT_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)]


def _pg_admin_url(db: str) -> str:
    base, _, _ = PG_URL.rpartition("/")
    return f"{base}/{db}"


async def _pg_exec(sql: str) -> None:
    eng = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        async with eng.connect() as c:
            await c.execute(text(sql))
    finally:
        await eng.dispose()


_pg_state: dict[str, object] = {}


def _pg_template() -> str:
    """Create (once per test session) a migrated template database; skip/fail when PostgreSQL is absent."""
    if "template" in _pg_state:
        return str(_pg_state["template"])
    if "error" in _pg_state:
        _pg_unavailable(str(_pg_state["error"]))
    name = f"vetbot_tmpl_{os.getpid()}"
    try:
        asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}"'))
        asyncio.run(_pg_exec(f'CREATE DATABASE "{name}"'))
    except Exception as e:
        _pg_state["error"] = f"{type(e).__name__}: {e}"
        _pg_unavailable(str(_pg_state["error"]))
    upgrade(_pg_admin_url(name))
    _pg_state["template"] = name
    return name


def _pg_unavailable(why: str) -> None:
    msg = f"PostgreSQL at {PG_URL} not available: {why}"
    if IN_CI:
        pytest.fail(msg + " (required under CI=true)")
    pytest.skip(msg)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    name = _pg_state.get("template")
    if name:
        try:
            asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except Exception:
            pass


_sqlite_template: dict[str, Path] = {}


def database_url(backend: str, tmp_path: Path) -> tuple[str, str | None]:
    """A fresh, migrated database URL for ``backend`` (and the PG database name to drop)."""
    if backend == "sqlite":
        if "path" not in _sqlite_template:
            tpl = Path(os.environ.get("PYTEST_TMPDIR", "/tmp")) / f"vetbot_tmpl_{os.getpid()}_{uuid.uuid4().hex}.db"
            upgrade(f"sqlite+aiosqlite:///{tpl}")
            _sqlite_template["path"] = tpl
        target = tmp_path / "vetbot.db"
        target.write_bytes(_sqlite_template["path"].read_bytes())
        return f"sqlite+aiosqlite:///{target}", None
    tmpl = _pg_template()
    name = f"vetbot_t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_exec(f'CREATE DATABASE "{name}" TEMPLATE "{tmpl}"'))
    return _pg_admin_url(name), name


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh migrated database, once per backend."""
    url, pg_name = database_url(request.param, tmp_path)
    yield url
    if pg_name:
        try:
            asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
        except Exception:
            pass


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """An open Database on a fresh migrated schema (SQLite and PostgreSQL)."""
    database = Database(db_url)
    yield database
    await database.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_config(db_url: str, **overrides: object) -> Config:
    """The example config pointed at ``db_url``; ``overrides`` as VETBOT_* style {"bot__fallback_flow": "help"}."""
    env = {f"VETBOT_{k.upper()}": str(v) for k, v in overrides.items()}
    env["VETBOT_DATABASE__URL"] = db_url
    cfg = load_config(ROOT / "config.example.yaml", env)
    cfg.qa.cache_dir = ""
    return cfg


@pytest.fixture
def config(db_url: str) -> Config:
    return make_config(db_url)


CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
async def browser_page():  # type: ignore[no-untyped-def]
    """A Playwright page in Debian's headless Chromium (phone-sized viewport).

    Skips when Chromium or Playwright is missing, except under CI=true where it fails.
    """
    import shutil

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        exe = None
    if not exe:
        msg = "Debian chromium and the playwright package are needed for browser tests"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1,
                                            locale="zh-CN")
        page = await context.new_page()
        try:
            yield page
        finally:
            await context.close()
            await browser.close()
