"""Helpers the benchmarks share: a free loopback port, and waiting for a server process to listen."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


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
