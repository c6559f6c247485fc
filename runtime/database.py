"""PostgreSQL connection pools shared by the services."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import ConnectionPool


def configure_session(conn: psycopg.Connection[Any]) -> None:
    """Durable commits: what a service acknowledges (a broker message, an HTTP 201) must
    survive a crash, even where the server (or a role) defaults to ``synchronous_commit = off``.
    UTC session time zone: timestamps read back are in UTC whatever the server's default."""
    conn.execute("SET synchronous_commit = on")
    conn.execute("SET TIME ZONE 'UTC'")
    conn.commit()


def open_pool(dsn: str, *, max_size: int) -> ConnectionPool:
    """A pool of durable-commit, UTC connections, checked before each use so a restarted server
    costs one failed attempt, not a dead service."""
    return ConnectionPool(
        dsn,
        min_size=1,
        max_size=max_size,
        check=ConnectionPool.check_connection,
        configure=configure_session,
        open=True,
    )
