"""Slow and idle clients: time limits and a connection cap in the server itself.

aiohttp waits as long as a client takes: for a request head that never ends, for a body that trickles
in, and (by default) an hour on an idle keep-alive connection. A thousand half-sent requests then hold
a thousand sockets, the process runs out of file descriptors and `/healthz` stops answering. The
proxy in front should time clients out too; this is the second line, which also holds when WeChat
(or an attacker) reaches the process directly:

* ``server.header_timeout_s``: a new connection that has not delivered a whole request head by then is
  closed (:meth:`ConnectionGuard.protocol_factory` arms the timer; :func:`guard_middleware` marks the
  connection as started when its first request reaches the app);
* ``server.body_timeout_s``: a request whose body has not fully arrived by then gets 408 and its
  connection is closed (:func:`guard_middleware`);
* ``server.keepalive_timeout_s``: aiohttp's own keep-alive timer closes idle connections;
* ``server.max_connections``: at the cap a new connection closes the oldest connection that is not in
  the middle of a request (idle, or still sending its head); when every connection is busy the newcomer
  gets a bare 503 and is closed. Busy connections finish their requests.

A client that drops its connection mid-request, a malformed request head and every connection closed
here log one short line (at most one per reason every 10 s, with a count), never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from bot.config import ServerConfig

log = logging.getLogger("vetbot.http")

#: One line per reason at most this often (the rest are counted into the next line).
LOG_EVERY_S = 10.0

_BUSY_503 = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\n"
             b"Content-Length: 12\r\n\r\nserver busy\n")


class _Refuse(asyncio.Protocol):
    """The protocol of a connection over the cap: a bare 503, then close."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY_503)
        transport.close()


class ConnectionGuard:
    """Connection bookkeeping shared by the protocol factory (``vetbot serve``) and the middleware."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.header_timeout_s = cfg.header_timeout_s
        self.body_timeout_s = cfg.body_timeout_s
        self.max_connections = cfg.max_connections
        # Connections inside a request now, and new ones whose first request has not reached the app yet
        # (their head timer runs); guard_middleware keeps both. Plain sets: aiohttp's handlers take no
        # weak references; an entry leaves when its request ends, or when its timer fires.
        self._busy: set[Any] = set()
        self._awaiting_head: set[Any] = set()
        #: How often each reason happened (tests and `/healthz` readers).
        self.counts: Counter[str] = Counter()
        self._logged_at: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    # --- logging ----------------------------------------------------------------------------
    def note(self, reason: str, text: str, level: int = logging.INFO) -> None:
        """Count ``reason`` and log ``text`` unless the same reason was logged in the last 10 s."""
        self.counts[reason] += 1
        now = time.monotonic()
        if now - self._logged_at.get(reason, -LOG_EVERY_S) < LOG_EVERY_S:
            self._unlogged[reason] += 1
            return
        more = self._unlogged.pop(reason, 0)
        self._logged_at[reason] = now
        log.log(level, "%s%s", text, f" (and {more} more like it in the last {LOG_EVERY_S:.0f} s)" if more else "")

    # --- connections ------------------------------------------------------------------------
    def protocol_factory(self, server: web.Server) -> Callable[[], asyncio.BaseProtocol]:
        """The factory ``loop.create_server`` calls per connection: aiohttp's handler, under the cap and
        with the head timer armed."""
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.BaseProtocol:
            if not self._make_room(server):
                self.note("refused", f"connection refused: {self.max_connections} connections open and every "
                                     "one busy (server.max_connections)", logging.WARNING)
                return _Refuse()
            handler = server()
            self._awaiting_head.add(handler)
            loop.call_later(self.header_timeout_s, self._head_deadline, handler)
            return handler

        return factory

    def _make_room(self, server: web.Server) -> bool:
        """True when a new connection may open: below the cap, or after closing the oldest idle one."""
        conns = server.connections  # oldest first (aiohttp keeps them in a dict in arrival order)
        if len(conns) < self.max_connections:
            return True
        # First a connection still sending its first request head (what a slowloris holds), then an
        # idle keep-alive one; never one inside a request.
        for pick in (lambda h: h in self._awaiting_head, lambda h: h not in self._busy):
            for handler in conns:
                if pick(handler) and handler.transport is not None and not handler.transport.is_closing():
                    self._awaiting_head.discard(handler)
                    handler.force_close()
                    self.note("evicted", f"closed an idle connection to make room: {self.max_connections} "
                                         "open (server.max_connections)", logging.WARNING)
                    return True
        return False

    def _head_deadline(self, handler: RequestHandler) -> None:
        if handler not in self._awaiting_head:
            return
        self._awaiting_head.discard(handler)
        if handler.transport is None or handler.transport.is_closing():
            return
        handler.force_close()
        self.note("head_timeout", f"closed a connection that sent no complete request head within "
                                  f"{self.header_timeout_s:g} s (server.header_timeout_s)")


GUARD = web.AppKey("connection_guard", ConnectionGuard)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


#: ``translate(request, exc)``: the response for an exception a handler raised (a Chinese page for a
#: database outage, a conflict, a bug), or None to let it propagate.
Translate = Callable[[web.Request, Exception], web.StreamResponse | None]
#: ``decorate(request, response)``: adds the headers every response carries.
Decorate = Callable[[web.Request, web.StreamResponse], None]


def guard_middleware(guard: ConnectionGuard, translate: Translate | None = None,
                     decorate: Decorate | None = None) -> Any:
    """The app's one middleware (one layer per request on the hot path): marks the connection busy while
    the app handles a request, enforces ``server.body_timeout_s``, turns a client that went away
    mid-request into one log line instead of a traceback, lets ``translate`` answer exceptions, and
    ``decorate`` every response (returned or raised, e.g. a redirect or a 404)."""
    busy, awaiting_head = guard._busy, guard._awaiting_head

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        proto = request.protocol
        awaiting_head.discard(proto)
        busy.add(proto)
        timer: asyncio.TimerHandle | None = None
        expired = False
        task = None
        if request.body_exists and not request.content.is_eof():
            # Only while the body is incomplete: a handler past its read (a turn, a page) is never cut.
            task = asyncio.current_task()

            def expire() -> None:
                nonlocal expired
                if not request.content.is_eof() and task is not None:
                    expired = True
                    task.cancel()

            timer = asyncio.get_running_loop().call_later(guard.body_timeout_s, expire)
        try:
            resp = await handler(request)
        except asyncio.CancelledError:
            if not expired or task is None or task.uncancel() > 0:
                raise
            guard.note("body_timeout", f"{request.method} {request.path}: request body not complete within "
                                       f"{guard.body_timeout_s:g} s (server.body_timeout_s); connection closed")
            resp = web.Response(status=408, text="request body too slow")
            resp.force_close()
            return resp
        except web.HTTPException as e:
            if decorate is not None:
                decorate(request, e)
            raise
        except Exception as e:
            if isinstance(e, OSError) and _client_gone(request):
                # ConnectionResetError and friends from reading the body of a client that went away.
                guard.note("dropped", f"{request.method} {request.path}: client went away before the whole "
                                      "request arrived")
                resp = web.Response(status=400, text="incomplete request")
                resp.force_close()
                return resp
            answer = translate(request, e) if translate is not None else None
            if answer is None:
                raise
            resp = answer
        finally:
            if timer is not None:
                timer.cancel()
            busy.discard(proto)
        if decorate is not None:
            decorate(request, resp)
        return resp

    return middleware


class _OneLine(logging.Filter):
    """aiohttp logs a malformed request head (a scanner, a slowloris, binary junk) as an ERROR with a
    traceback; those are the client's doing: one short INFO line, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        from aiohttp.http_exceptions import HttpProcessingError

        if isinstance(exc, (HttpProcessingError, ConnectionError)):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {first}"[:300]
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_client_errors() -> None:
    """Install the one-line filter on aiohttp's server logger (idempotent)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _OneLine) for f in logger.filters):
        logger.addFilter(_OneLine())


def raise_file_limit(max_connections: int, reserve: int = 256) -> str | None:
    """Raise the soft open-file limit to fit ``max_connections`` plus ``reserve`` (database, logs,
    the WeChat client); a warning text when the hard limit does not allow it."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    want = max_connections + reserve
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (OSError, ValueError):
            pass
    if soft != resource.RLIM_INFINITY and soft < want:
        return (f"open-file limit {soft} is below server.max_connections ({max_connections}) + {reserve}: "
                "lower server.max_connections or raise `ulimit -n`")
    return None


async def serve(app: web.Application, host: str, port: int, *, backlog: int = 512,
                on_listening: Callable[[], None] | None = None, shutdown_timeout: float = 30.0) -> None:
    """Serve ``app`` on ``host:port`` with the connection guard until cancelled (SIGINT/SIGTERM raise
    ``web.GracefulExit`` through the runner's signal handlers, as ``web.run_app`` does)."""
    runner = web.AppRunner(app, handle_signals=True, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    server = None
    try:
        assert runner.server is not None
        loop = asyncio.get_running_loop()
        server = await loop.create_server(app[GUARD].protocol_factory(runner.server), host, port,
                                          backlog=backlog, reuse_address=True)
        if on_listening is not None:
            on_listening()
        await asyncio.Future()  # until cancelled
    finally:
        if server is not None:
            server.close()
        await runner.cleanup()


def run(make_app: Awaitable[web.Application], host: str, port: int, *,
        on_listening: Callable[[], None] | None = None) -> None:
    """``web.run_app`` for :func:`serve`: one event loop (uvloop's when installed), graceful exit on
    SIGINT/SIGTERM, every task cancelled and the loop closed at the end."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    async def main() -> None:
        app = await make_app
        await serve(app, host, port, on_listening=on_listening)

    task = loop.create_task(main())
    try:
        loop.run_until_complete(task)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        task.cancel()
        try:
            loop.run_until_complete(task)
        except (asyncio.CancelledError, web.GracefulExit, KeyboardInterrupt):
            pass
        rest = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in rest:
            t.cancel()
        if rest:
            loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)
