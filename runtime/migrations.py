"""Versioned SQL migrations from ``schemas/migrations`` (the storage contract).

Files are ``NNNN_name.sql``, applied in order once each and recorded in
``schema_migrations``. A migration may have a flavour companion, ``NNNN_name.postgres.sql`` or
``NNNN_name.timescale.sql``, run right after it on that flavour; inside the base file,
``/*@postgres ... @*/`` clauses are kept on plain PostgreSQL and dropped with TimescaleDB.
Replicas starting together serialise on an advisory lock; running again is a no-op.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import psycopg

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "schemas" / "migrations"
_LOCK_KEY = 0x65765F6D6967  # "ev_mig"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_POSTGRES_ONLY = re.compile(r"/\*@postgres(.*?)@\*/", re.DOTALL)


class Flavour(StrEnum):
    AUTO = "auto"
    POSTGRES = "postgres"
    TIMESCALE = "timescale"


class MigrationError(RuntimeError):
    """A migration could not be applied; the database is left at the previous version."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    def sql(self, flavour: Flavour) -> str:
        text = self.path.read_text()
        keep = r"\1" if flavour is Flavour.POSTGRES else ""
        text = _POSTGRES_ONLY.sub(keep, text)
        companion = self.path.with_name(f"{self.path.stem}.{flavour.value}.sql")
        if companion.exists():
            text += "\n" + companion.read_text()
        return text


def available(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if match:
            found.append(Migration(int(match[1]), match[2], path))
    return found


def detect_flavour(conn: psycopg.Connection[Any], wanted: Flavour = Flavour.AUTO) -> Flavour:
    """TimescaleDB when the extension is (or can be) installed, unless told otherwise."""
    if wanted is Flavour.POSTGRES:
        return wanted
    row = conn.execute(
        "SELECT installed_version IS NOT NULL FROM pg_available_extensions"
        " WHERE name = 'timescaledb'"
    ).fetchone()
    if row is None:
        if wanted is Flavour.TIMESCALE:
            raise MigrationError("TimescaleDB was asked for but is not available on this server")
        return Flavour.POSTGRES
    if not row[0]:
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except psycopg.Error as exc:
            if wanted is Flavour.TIMESCALE:
                raise MigrationError(f"cannot create the timescaledb extension: {exc}") from exc
            log.warning("timescaledb is available but cannot be created (%s); plain PG", exc)
            return Flavour.POSTGRES
    return Flavour.TIMESCALE


def migrate(dsn: str, *, flavour: Flavour = Flavour.AUTO) -> tuple[Flavour, list[str]]:
    """Apply what is missing; returns the flavour in use and the names applied now."""
    applied_now: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, flavour text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            rows = conn.execute("SELECT version, flavour FROM schema_migrations").fetchall()
            done = {int(version) for version, _ in rows}
            flavour = Flavour(rows[0][1]) if rows else detect_flavour(conn, flavour)
            for migration in available():
                if migration.version in done:
                    continue
                log.info("applying migration %04d_%s (%s)", migration.version, migration.name,
                         flavour.value)  # fmt: skip
                try:
                    with conn.transaction():
                        conn.execute(migration.sql(flavour).encode())
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name, flavour)"
                            " VALUES (%s, %s, %s)",
                            (migration.version, migration.name, flavour.value),
                            prepare=False,  # a single-process server shares statement names
                        )
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} failed: {exc}"
                    ) from exc
                applied_now.append(f"{migration.version:04d}_{migration.name}")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return flavour, applied_now
