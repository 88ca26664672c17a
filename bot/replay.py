"""Refuse a callback URL reused with another body.

WeChat signs a callback URL (``signature`` over token, timestamp and nonce), not its body; in plain and
compatible mode that signature is all there is. Whoever captured one genuine URL (a proxy log, a
browser history, a shared screenshot) could post it again with any body, as any user, while its
timestamp is inside ``server.timestamp_window_s``. So every accepted (timestamp, nonce) pair is
remembered with a digest of its body until the timestamp leaves the window, and the same pair with
another body is refused. The same pair with the same body is WeChat's retry: it passes, and the turn's
dedup record answers it.

Where the memory lives follows design.md (the database is the coordinator): PostgreSQL, where several
`vetbot serve` processes share the callbacks, keeps the pairs in ``callback_nonces`` (one
``INSERT … ON CONFLICT`` per callback, purged by the ``purge_callback_nonces`` tick); SQLite, one
process, keeps them in this process's memory, so the hot path gains no statement and no commit.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

from storage.db import Database
from storage.replay import remember_pg

log = logging.getLogger("vetbot.gateway")


def body_digest(body: bytes) -> str:
    """The digest a pair is remembered with (40 hex characters)."""
    return hashlib.blake2b(body, digest_size=20).hexdigest()


def pair_key(timestamp: int, nonce: str) -> str:
    """The table key of a pair: the nonce is the sender's text, the key stays 40 characters."""
    return hashlib.blake2b(f"{timestamp}:{nonce}".encode(), digest_size=20).hexdigest()


class ReplayGuard:
    """Remembers pairs for ``horizon(timestamp)``: until the timestamp leaves the window."""

    def __init__(self, window_s: int, fallback_s: float) -> None:
        # With the timestamp check off (window 0) a captured URL never goes stale: remember its pair for
        # ``fallback_s`` (bot.dedup_ttl_h), as long as a dedup record lives.
        self.window_s, self.fallback_s = window_s, fallback_s

    def expires(self, timestamp: int, now: float) -> float:
        """Epoch seconds after which the pair needs no memory (the window check refuses it anyway)."""
        if self.window_s:
            return timestamp + self.window_s + 1
        return now + self.fallback_s

    async def check(self, timestamp: int, nonce: str, body: bytes) -> bool:
        """Remember the pair; False when it was seen before with another body."""
        raise NotImplementedError


class MemoryReplayGuard(ReplayGuard):
    """Pairs in this process's memory (SQLite: one serve process)."""

    def __init__(self, window_s: int, fallback_s: float, *, clock: Callable[[], float] = time.time,
                 max_pairs: int = 2_000_000) -> None:
        super().__init__(window_s, fallback_s)
        self.clock = clock
        self.max_pairs = max_pairs
        self._pairs: dict[tuple[int, str], int] = {}
        # (expiry, pair) in arrival order. Expiries are almost in order (timestamps follow the clock);
        # one that is not waits behind a later one and is dropped a little late, never early.
        self._order: deque[tuple[float, tuple[int, str]]] = deque()
        self._warned = False

    def seen_ok(self, timestamp: int, nonce: str, body: bytes) -> bool:
        """:meth:`check` without a coroutine (the SQLite hot path, a few µs)."""
        now = self.clock()
        order, pairs = self._order, self._pairs
        if order and (order[0][0] < now or len(pairs) > self.max_pairs):
            self._forget(now)
        # Python's hash of the bytes: SipHash under a key drawn at start-up (unless PYTHONHASHSEED pins
        # it; even then a second body with the same 64-bit digest takes ~2^64 tries). Cheaper than
        # blake2b, and the digests never leave this process.
        digest = hash(body)
        n = len(pairs)
        first = pairs.setdefault((timestamp, nonce), digest)
        if len(pairs) > n:
            order.append((timestamp + self.window_s + 1 if self.window_s else now + self.fallback_s,
                          (timestamp, nonce)))
            return True
        return first == digest

    def _forget(self, now: float) -> None:
        order, pairs = self._order, self._pairs
        while order and (order[0][0] < now or len(pairs) > self.max_pairs):
            if order[0][0] >= now and not self._warned:
                self._warned = True
                log.warning("more than %d callback nonces in the replay window; the oldest are forgotten",
                            self.max_pairs)
            pairs.pop(order.popleft()[1], None)

    async def check(self, timestamp: int, nonce: str, body: bytes) -> bool:
        return self.seen_ok(timestamp, nonce, body)

    def __len__(self) -> int:
        return len(self._pairs)


class DbReplayGuard(ReplayGuard):
    """Pairs in ``callback_nonces`` (PostgreSQL: every serve process sees every other's)."""

    def __init__(self, db: Database, window_s: int, fallback_s: float, *,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(window_s, fallback_s)
        self.db, self.clock = db, clock

    async def check(self, timestamp: int, nonce: str, body: bytes) -> bool:
        digest = body_digest(body)
        expires = datetime.fromtimestamp(self.expires(timestamp, self.clock()), UTC).replace(tzinfo=None)
        return await remember_pg(self.db, pair_key(timestamp, nonce), digest, expires) == digest


def replay_guard(db: Database, window_s: int, fallback_s: float, *,
                 clock: Callable[[], float] = time.time) -> ReplayGuard:
    """The guard for this database: in memory on SQLite, the shared table on PostgreSQL."""
    if db.is_sqlite:
        return MemoryReplayGuard(window_s, fallback_s, clock=clock)
    return DbReplayGuard(db, window_s, fallback_s, clock=clock)
