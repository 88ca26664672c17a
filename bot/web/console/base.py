"""What the console's pages share: the runtime, the logged-in staff member, rendering, forms, errors."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from bot.clock import from_local, to_local
from bot.web import render

log = logging.getLogger("vetbot.console")

#: The navigation (path, label, admin only). Later pages (人工, 知识库, 导入) add their entry here.
NAV: list[tuple[str, str, bool]] = [
    ("/staff/", "首页", False),
    ("/staff/broadcasts", "群发通知", False),
    ("/staff/callups", "应急集结", False),
    ("/staff/memorial", "寄语审核", False),
    ("/staff/inbox", "人工", False),
    ("/staff/users", "用户", False),
    ("/staff/kb", "知识库", False),
    ("/staff/imports", "导入", False),
    ("/staff/audit", "操作记录", True),
]
ROLE_WORDS = {"admin": "管理员", "staff": "工作人员", "volunteer": "应急队员", "veteran": "退役军人", "family": "军属/家属"}


@dataclass(frozen=True)
class Staff:
    """The staff member a request comes from."""

    openid: str
    name: str
    roles: frozenset[str]
    csrf: str
    session_hash: str

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def label(self) -> str:
        return self.name or f"工作人员 {self.openid[-6:]}"


#: request key of the logged-in :class:`Staff` (a typed key where aiohttp has them).
STAFF_KEY: Any = web.RequestKey("vetbot_staff", Staff) if hasattr(web, "RequestKey") else "vetbot_staff"


class Console:
    """The console's process-wide state: runtime, a WeChat API client (QR codes), recent errors."""

    def __init__(self, runtime: Any) -> None:
        self.rt = runtime
        self.cfg = runtime.config
        self.tz = runtime.config.bot.timezone
        self._client: Any = None
        self.qr_times: collections.deque[float] = collections.deque()
        self.tasks: set[asyncio.Future[Any]] = set()
        install_error_log()

    @property
    def db(self) -> Any:
        return self.rt.db

    def now(self) -> datetime:
        return self.rt.clock.now()

    def client(self) -> Any:
        """The WeChat API client (shared access token in the database), made on first use."""
        if self._client is None:
            from bot.outbox import build_client

            self._client = build_client(self.cfg, self.rt.db)
        return self._client

    def background(self, coro: Any) -> None:
        """Run ``coro`` after the response (a large notice's fan-out); kept referenced until done, logged
        if it fails (the broadcast_fanout tick finishes what a failed or interrupted run left)."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)

        def done(t: asyncio.Future[Any]) -> None:
            self.tasks.discard(t)  # type: ignore[arg-type]
            if not t.cancelled() and t.exception() is not None:
                log.error("console: background work failed: %s", t.exception())

        task.add_done_callback(done)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self._client is not None:
            await self._client.close()
            self._client = None

    def today_start(self) -> datetime:
        """Naive UTC of the local midnight that began today."""
        local = to_local(self.now(), self.tz)
        return from_local(local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None), self.tz)

    def page(self, request: web.Request, template: str, *, status: int = 200, title: str = "",
             **context: Any) -> web.Response:
        """A console page: the layout with navigation, the staff member and their CSRF token."""
        staff: Staff | None = request.get(STAFF_KEY)
        nav = [(path, label, _active(request.path, path)) for path, label, admin in NAV
               if not admin or (staff is not None and staff.is_admin)]
        return render.html(template, status=status, tz=self.tz, title=title, staff=staff,
                           csrf=staff.csrf if staff else "", nav=nav, now=self.now(), role_words=ROLE_WORDS,
                           **context)

    def message(self, request: web.Request, status: int, title: str, text: str,
                back: str | None = None) -> web.Response:
        """A page that only says something (an error, a refusal) with a way back."""
        return self.page(request, "console/message.html", status=status, title=title, text=text, back=back)


def see_other(location: str) -> web.Response:
    """303 to ``location`` (after a POST, so a reload never repeats it), returned rather than raised so
    cookies can be set on it."""
    return web.Response(status=303, headers={"Location": location})


def staff_of(request: web.Request) -> Staff:
    """The logged-in staff member (the guard put it there; handlers never run without one)."""
    return request[STAFF_KEY]  # type: ignore[no-any-return]


def _active(current: str, path: str) -> bool:
    return current == path if path == "/staff/" else current.startswith(path)


async def form(request: web.Request) -> MultiDictProxy[Any]:
    """The POSTed form (already read and checked by the guard)."""
    return await request.post()


def field(data: MultiDictProxy[Any], name: str, limit: int = 2000) -> str:
    """A text field, stripped; control characters other than newlines dropped; at most ``limit``."""
    value = data.get(name, "")
    text = value if isinstance(value, str) else ""
    text = "".join(c for c in text if c in "\n\t" or ord(c) >= 32).replace("\r", "")
    return text.strip()[:limit]


def int_or_none(text: str) -> int | None:
    """Digits a database can take (no '²', no 5000 nines)."""
    t = text.strip()
    return int(t) if t.isascii() and t.isdigit() and len(t) <= 9 else None


def parse_local(text: str, tz: str) -> datetime | None:
    """'2026-04-04 08:00' or the datetime-local field's '2026-04-04T08:00' (local) -> naive UTC."""
    t = text.strip().replace("T", " ")
    for pattern in ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M"):
        try:
            return from_local(datetime.strptime(t, pattern), tz)
        except ValueError:
            continue
    return None


def safe_next(value: str | None) -> str | None:
    """A path inside the console to return to after login; anything else (another site) is dropped."""
    if not value or not value.startswith("/staff/") or value.startswith("//") or "\\" in value:
        return None
    if any(ord(c) < 33 for c in value) or len(value) > 200 or value.startswith("/staff/login"):
        return None
    return value


# ---------------------------------------------------------------------------------------------------
# The last errors of this process, for the dashboard (messages only; the logs hold no secrets or phones).


class _Ring(logging.Handler):
    def __init__(self, size: int = 20) -> None:
        super().__init__(level=logging.ERROR)
        self.records: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage().splitlines()[0][:300] if record.getMessage() else ""
        except Exception:
            text = str(record.msg)[:300]
        self.records.append((record.created, record.name, text))


_RING: _Ring | None = None


def install_error_log() -> None:
    """Keep the last ERROR records of this process (once per process)."""
    global _RING
    if _RING is None:
        _RING = _Ring()
        logging.getLogger().addHandler(_RING)


def recent_errors(since_s: float = 86400) -> list[tuple[datetime, str, str]]:
    """(UTC time, logger, first line) of this process's errors of the last day, newest first."""
    if _RING is None:
        return []
    cutoff = time.time() - since_s
    return [(datetime.fromtimestamp(t, UTC).replace(tzinfo=None), name, text) for t, name, text in reversed(_RING.records)
            if t >= cutoff]


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)
