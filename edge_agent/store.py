"""The agent's durable store: outgoing messages and detector state in one SQLite file (WAL).
It also keeps each meter's last days of readings (as minute means) for the second look.

A message enters the outbox in the same transaction as the detector state that produced it,
and leaves only when the broker has acknowledged it. So a ``kill -9``, a reboot or a broker
outage of days loses nothing, replays in order, and a session open before a crash ends once.

Bound: at most ``max_messages`` rows. Past that, the oldest *measurements* are dropped first
(they are periodic and the next one supersedes them); transactions and command results are
never dropped.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    kind TEXT NOT NULL,
    asset TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_kind ON outbox (kind, id);
CREATE TABLE IF NOT EXISTS detector_state (
    asset TEXT PRIMARY KEY,
    state BLOB NOT NULL
);
-- Each meter's last days as minute means, for the daily second look (``second_look``).
CREATE TABLE IF NOT EXISTS retained (
    asset TEXT NOT NULL,
    t REAL NOT NULL,
    power REAL NOT NULL,
    energy REAL,
    PRIMARY KEY (asset, t)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
"""

MEASUREMENT = "measurement"
TRANSACTION = "transaction"
COMMAND_RESULT = "command-result"


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    payload: bytes
    kind: str
    asset: str


RetainedReading = tuple[str, float, float, float | None]
"""(asset id, epoch seconds, power W, register Wh or None) kept for the second look."""


@dataclass(frozen=True, slots=True)
class Queued:
    id: int
    topic: str
    payload: bytes
    kind: str


class AgentStore:
    """One connection per thread: the agent writes, the publisher reads and acknowledges."""

    def __init__(self, path: Path, *, max_messages: int = 1_000_000) -> None:
        self.path = path
        self.max_messages = max_messages
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed message survives power loss, not only a process crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)
        self.dropped_measurements = 0
        # The agent thread writes and the publisher thread acknowledges: serialise them.
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def commit(
        self,
        messages: Sequence[Outgoing],
        states: dict[str, dict[str, Any]],
        retained: Sequence[RetainedReading] = (),
    ) -> None:
        """Atomically enqueue ``messages``, save the detector ``states`` that made them and
        keep the ``retained`` readings they were made from."""
        now = time.time()
        db = self._db
        with self._lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT INTO outbox (topic, payload, kind, asset, created) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(m.topic, m.payload, m.kind, m.asset, now) for m in messages],
                )
                db.executemany(
                    "INSERT INTO detector_state (asset, state) VALUES (?, ?) "
                    "ON CONFLICT (asset) DO UPDATE SET state = excluded.state",
                    [(asset, orjson.dumps(state)) for asset, state in states.items()],
                )
                # Idempotent: a reading kept before a crash is the same reading after it.
                db.executemany("INSERT OR IGNORE INTO retained VALUES (?, ?, ?, ?)", retained)
                self._enforce_bound()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _enforce_bound(self) -> None:
        (depth,) = self._db.execute("SELECT count(*) FROM outbox").fetchone()
        excess = depth - self.max_messages
        if excess > 0:
            cur = self._db.execute(
                "DELETE FROM outbox WHERE id IN "
                "(SELECT id FROM outbox WHERE kind = ? ORDER BY id LIMIT ?)",
                (MEASUREMENT, excess),
            )
            self.dropped_measurements += cur.rowcount

    def states(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT asset, state FROM detector_state").fetchall()
        return {asset: orjson.loads(state) for asset, state in rows}

    def retained(self, asset: str, since: float) -> list[tuple[float, float, float | None]]:
        """``asset``'s kept readings (time, power W, register Wh) from ``since``, in time order."""
        with self._lock:
            rows: list[tuple[float, float, float | None]] = self._db.execute(
                "SELECT t, power, energy FROM retained WHERE asset = ? AND t >= ? ORDER BY t",
                (asset, since),
            ).fetchall()
        return rows

    def forget_retained(self, before: float) -> None:
        """Drop the kept readings older than ``before`` (past the second look's days), every
        meter's: one that stopped reporting would otherwise keep its last days for ever."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM retained WHERE t < ?", (before,))
            self._db.execute("COMMIT")

    def pending(self, after_id: int, limit: int) -> list[Queued]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, kind FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [Queued(*row) for row in rows]

    def acknowledge(self, ids: Iterable[int]) -> None:
        batch = [(i,) for i in ids]
        if batch:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("DELETE FROM outbox WHERE id = ?", batch)
                self._db.execute("COMMIT")

    def reject(self, item: Queued, reason: str) -> None:
        """Keep a message the broker refused (e.g. ACL) aside instead of retrying it forever."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR REPLACE INTO rejected (id, topic, payload, reason, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (item.id, item.topic, item.payload, reason, time.time()),
            )
            self._db.execute("DELETE FROM outbox WHERE id = ?", (item.id,))
            self._db.execute("COMMIT")

    def depth(self) -> tuple[int, float | None]:
        """Queued messages and the age in seconds of the oldest."""
        with self._lock:
            row = self._db.execute("SELECT count(*), min(created) FROM outbox").fetchone()
        count, oldest = row
        return int(count), (time.time() - oldest) if oldest is not None else None
