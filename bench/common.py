"""Helpers the benchmarks share: a free loopback port, waiting for a server to listen, a process's CPU time,
and sending a file of requests once with wrk."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None,
              timeout: float = 60) -> None:
    """Return once something listens on ``port``; exit with the process's last output (its stderr pipe, or
    ``log``) if ``proc`` ends first or nothing listens within ``timeout`` seconds."""

    def output() -> str:
        if proc is not None and proc.stderr is not None and proc.poll() is not None:
            return proc.stderr.read().decode(errors="replace")[-3000:]
        if log is not None and log.exists():
            return log.read_text(encoding="utf-8", errors="replace")[-3000:]
        return ""

    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server for port {port} exited:\n{output()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listening on port {port} after {timeout:.0f} s:\n{output()}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc); 0.0 where unavailable.

    Throughput on a shared 2-core VM moves by ±30% between runs; CPU per message moves far less,
    so the benches print both.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


WRK_ONCE = Path(__file__).resolve().parent / "wrk_once.lua"


def callback_line(side: Any, xml: str, path: str) -> str:
    """One line of a wrk request file (see wrk_once.lua): ``xml`` signed (and encrypted, in safe mode) by
    ``side`` (a :class:`bot.sim.WeChatSide`) as WeChat would post it to ``path``."""
    s = side.sign(xml)
    body = s.body.replace("\n", "").replace("\t", " ")
    return f"{path}?{urlencode(s.query)}\t{body}\n"


async def wrk_once(url: str, reqfile: Path, conns: int, done: Callable[[], Awaitable[bool]],
                   limit_s: float = 170, threads: int = 2) -> dict[str, Any]:
    """Send every request of ``reqfile`` once with wrk (see wrk_once.lua for the line format) and stop wrk
    when ``done()`` says the server has handled them all (polled every 50 ms; at most ``limit_s`` seconds).

    Returns wrk's latency percentiles in ms (``p50``, ``p90``, ``p99``), ``errors`` (non-2xx/3xx and socket
    errors), ``complete`` (False: ``done()`` never said so, e.g. requests failed) and ``wall_s``: from
    wrk's start (including its reading the file) to the first poll that found the work done.
    """
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{int(limit_s) + 30}s", "--latency", "--timeout", "10s",
           "-s", str(WRK_ONCE), url, "--", str(reqfile), str(threads)]
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    finished = False
    while time.perf_counter() - t0 < limit_s and proc.returncode is None:
        if await done():
            finished = True
            break
        await asyncio.sleep(0.05)
    wall = time.perf_counter() - t0
    if proc.returncode is None:
        await asyncio.sleep(0.2)  # the replies of the last stored turns are still on their way to wrk
        proc.send_signal(signal.SIGINT)
    out = (await asyncio.wait_for(proc.communicate(), 60))[0].decode(errors="replace")
    if not finished:
        print(f"wrk: the server did not handle every request within {limit_s:.0f} s", file=sys.stderr)
    return {**wrk_stats(out), "wall_s": wall, "complete": finished}


def wrk_stats(out: str) -> dict[str, Any]:
    """Latency percentiles (ms), requests/s and errors (non-2xx/3xx and socket errors) from wrk --latency output."""

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        if m is None:
            raise SystemExit(f"wrk printed no latency distribution:\n{out[-2000:]}")
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockerr = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sockerr.groups())) if sockerr else 0)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {"p50": pct("50"), "p90": pct("90"), "p99": pct("99"), "errors": errors,
            "rps": float(rps.group(1)) if rps else 0.0}


async def wrk_get(url: str, conns: int, seconds: int, threads: int = 2) -> dict[str, Any]:
    """GET ``url`` over ``conns`` connections for ``seconds`` with wrk; :func:`wrk_stats` of the run."""
    proc = await asyncio.create_subprocess_exec(
        "wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out = (await proc.communicate())[0].decode(errors="replace")
    return wrk_stats(out)
