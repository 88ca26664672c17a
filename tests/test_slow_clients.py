"""Slow and idle clients (issue 14, item 3): half-sent request heads and bodies are closed, a connection
cap holds, `/healthz` keeps answering, and a dropped or malformed request logs one short line.

The in-process tests run the app behind :func:`bot.httpserver.serve` (the listening socket's protocol
factory is where the cap and the head timer live) with sub-second timeouts set on the loaded config
(the config file's own ranges start at 1 s for operators); they wait for the server's events (EOF, an
answer), never for a fixed time. One test runs a real `vetbot serve` (uvloop, its logging) end to end.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from bot.app import build_runtime, create_app
from bot.clock import FakeClock, SystemClock
from bot.httpserver import GUARD, serve
from tests.conftest import ROOT, make_config

HALF_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
HALF_BODY = (b"POST /wechat?signature=0&timestamp=1&nonce=2 HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
             b"Content-Length: 4096\r\n\r\n<xml><ToUserName>")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def served(db_url: str, **server: float) -> AsyncIterator[tuple[int, Any]]:
    """The app behind bot.httpserver.serve on a loopback port; ``server`` overrides ServerConfig fields."""
    cfg = make_config(db_url, bot__fallback_flow="help", qa__use_encoder="false")
    for k, v in server.items():
        setattr(cfg.server, k, v)
    runtime = await build_runtime(cfg, clock=FakeClock(SystemClock().now()))
    app = create_app(runtime, background=False)
    port = _port()
    listening = asyncio.Event()
    task = asyncio.create_task(serve(app, "127.0.0.1", port, on_listening=listening.set, shutdown_timeout=1))
    try:
        await asyncio.wait_for(listening.wait(), 30)
        yield port, app
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


async def _closed_by_server(reader: asyncio.StreamReader, within: float = 10) -> bytes:
    """Everything the server sends until it closes the connection (fails after ``within`` seconds)."""
    return await asyncio.wait_for(reader.read(), within)


async def _healthz(port: int) -> int:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
            return r.status


async def test_many_half_sent_requests_are_closed_while_healthz_answers(db_url: str) -> None:
    async with served(db_url, header_timeout_s=0.5, body_timeout_s=0.5, max_connections=64) as (port, app):
        conns = []
        for i in range(150):  # more than the cap: the oldest half-sent ones make room
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(HALF_BODY if i % 3 == 0 else HALF_HEAD)
            conns.append((r, w))
        await asyncio.gather(*(w.drain() for _, w in conns))
        assert await _healthz(port) == 200, "/healthz answers in the middle of the flood"
        answers = await asyncio.gather(*(_closed_by_server(r) for r, _ in conns))
        for _, w in conns:
            w.close()
        # Half-sent heads get no answer, just a close; half-sent bodies get 408 (those evicted first: none).
        assert all(a == b"" or a.startswith(b"HTTP/1.1 408") for a in answers)
        assert any(a.startswith(b"HTTP/1.1 408") for a in answers), "a body that stalls gets 408"
        counts = app[GUARD].counts
        assert counts["head_timeout"] + counts["evicted"] >= 100 and counts["body_timeout"] >= 1
        assert await _healthz(port) == 200


async def test_connection_cap_evicts_the_oldest_idle_connection(db_url: str) -> None:
    async with served(db_url, max_connections=16, keepalive_timeout_s=60) as (port, app):
        idle = []
        for _ in range(16):  # keep-alive connections that answered one request and now wait
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200")
            idle.append((r, w))
        assert await _healthz(port) == 200  # the 17th connection: the oldest idle one made room
        assert await _closed_by_server(idle[0][0]) != b"" or idle[0][0].at_eof()
        assert app[GUARD].counts["evicted"] >= 1
        for _, w in idle:
            w.close()


async def test_connection_cap_refuses_a_newcomer_when_every_connection_is_busy(db_url: str) -> None:
    async with served(db_url, max_connections=16, body_timeout_s=30) as (port, app):
        busy = []
        for _ in range(16):  # each inside a request, its body still coming
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(HALF_BODY)
            await w.drain()
            busy.append((r, w))
        for _ in range(100):  # until every one of them is inside the app
            if len(app[GUARD]._busy) == 16:
                break
            await asyncio.sleep(0.01)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await _closed_by_server(r)
        assert answer.startswith(b"HTTP/1.1 503") and app[GUARD].counts["refused"] == 1
        w.close()
        for _, w in busy:
            w.close()


async def test_a_stalled_body_gets_408_and_one_log_line(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with served(db_url, body_timeout_s=0.3) as (port, _):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(HALF_BODY)
        await w.drain()
        assert (await _closed_by_server(r)).startswith(b"HTTP/1.1 408")
        w.close()
    lines = [rec for rec in caplog.records if "request body not complete" in rec.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0].getMessage()
    assert not [rec for rec in caplog.records if rec.exc_info], "no traceback"


async def test_keepalive_idle_connection_is_closed(db_url: str) -> None:
    async with served(db_url, keepalive_timeout_s=0.3) as (port, _):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await w.drain()
        first = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
        assert first.startswith(b"HTTP/1.1 200")
        await _closed_by_server(r)  # EOF once the idle time is over (aiohttp's default: an hour)
        w.close()


@pytest.mark.slow
async def test_serve_logs_one_short_line_per_dropped_or_malformed_request(db_url: str) -> None:
    """A real `vetbot serve` (uvloop): a client that drops its connection mid-body, a half-sent head and
    binary junk each log one line, no traceback; /healthz answers throughout."""
    port = _port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VETBOT_")}
    env.update(PYTHONPATH=str(ROOT), VETBOT_DATABASE__URL=db_url, VETBOT_QA__USE_ENCODER="false",
               VETBOT_BOT__FALLBACK_FLOW="help", VETBOT_SERVER__HEADER_TIMEOUT_S="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "serve", "-c", str(ROOT / "config.example.yaml"), "--port", str(port),
        "--no-background", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=str(ROOT))
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        assert b"serving on" in line, line
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(HALF_BODY)
        await w.drain()
        assert await _healthz(port) == 200  # the request is inside the app now
        w.transport.abort()  # drop it (RST), as a phone losing its signal does
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(HALF_HEAD)
        await w.drain()
        await _closed_by_server(r)  # header_timeout_s
        w.close()
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 junk\r\n\r\n")  # a TLS hello on the HTTP port
        await w.drain()
        await _closed_by_server(r)
        w.close()
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /\x00\x01 HTTP/1.1\r\nHost: x\r\n\r\n")
        await w.drain()
        assert (await _closed_by_server(r)).split(b"\r\n")[0].endswith(b" 400 Bad Request")
        w.close()
        assert await _healthz(port) == 200
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    log = err.decode(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert "client went away before the whole request arrived" in log
    assert "sent no complete request head within 1 s" in log
    assert "Error handling request" in log  # aiohttp's own line for the junk, one line each
    # config.example.yaml's sample secret key is tolerated against the local fake API, with a warning.
    assert "accepted only because wechat.api_base is the local fake WeChat API" in log
    assert proc.returncode == 0, log[-2000:]
