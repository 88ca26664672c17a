"""Logs without personal data (个人信息保护法: least data; logs are copied, shipped and kept far longer than
the database rows they describe).

vetbot's own log lines never carry names, phone numbers or message texts (tests/privacy/test_logs.py runs a
full scripted conversation at DEBUG and searches the output). What a library may put into a message is
caught here, on every handler :func:`configure` installs:

* mobile numbers anywhere in a message or a traceback are masked (139****5678);
* a database error's ``DETAIL: Key (phone)=(…)`` and SQLAlchemy's ``[parameters: …]`` are cut (the engine is
  also created with ``hide_parameters`` unless ``database.echo`` is on, which is for debugging only).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import IO

_MOBILE = re.compile(r"(?<!\d)(1[3-9]\d)[\s-]?\d{4}[\s-]?(\d{4})(?!\d)")
_DETAIL = re.compile(r"(DETAIL:\s+Key \([^)]*\)=)\([^)]*\)")
_PARAMS = re.compile(r"\[parameters: .*?\](?=\n|$)", re.S)


def redact(text: str) -> str:
    """``text`` with phone numbers masked and database error details cut."""
    text = _DETAIL.sub(r"\1(…)", text)
    text = _PARAMS.sub("[parameters hidden]", text)
    return _MOBILE.sub(r"\1****\2", text)


class RedactingFormatter(logging.Formatter):
    """A formatter whose output (message, traceback and stack) has passed :func:`redact`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str | int = "INFO", stream: IO[str] | None = None) -> logging.Handler:
    """Log to ``stream`` (stderr) at ``level`` through :class:`RedactingFormatter`, replacing the root
    logger's handlers (what ``vetbot`` does at start). Returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(RedactingFormatter(FORMAT))
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, logging.StreamHandler) and getattr(h, "_vetbot", False):
            root.removeHandler(h)
    handler._vetbot = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else str(level).upper())
    return handler
