"""Real-server fixtures: Mosquitto and PostgreSQL, taken from env vars or started privately.

* ``EV_TEST_MQTT`` = ``host:port`` of a broker to use instead of a private one;
* ``EV_TEST_PG_DSN`` = a libpq URI of a server (with CREATE DATABASE rights) to use instead.

Tests that stop or kill a server use the ``private_broker`` / ``private_postgres`` factories,
never the shared ones. When ``CI`` is set, a missing server binary is an error, not a skip.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from runtime.localservers import (
    LocalServerError,
    MosquittoServer,
    PostgresServer,
    server_directory,
)


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must not skip: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerAddress]:
    """A Mosquitto broker shared by the session (not to be stopped by tests)."""
    configured = os.environ.get("EV_TEST_MQTT")
    if configured:
        host, _, port = configured.rpartition(":")
        yield BrokerAddress(host or "127.0.0.1", int(port))
        return
    server = MosquittoServer(tmp_path_factory.mktemp("mosquitto"))
    try:
        server.start()
    except LocalServerError as exc:
        _unavailable(str(exc))
    yield BrokerAddress(server.host, server.port)
    server.stop()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Callable[..., MosquittoServer]]:
    """Factory for brokers a test may stop, kill and restart."""
    servers: list[MosquittoServer] = []

    def start(**kwargs: object) -> MosquittoServer:
        server = MosquittoServer(tmp_path / f"mosquitto{len(servers)}", **kwargs)  # type: ignore[arg-type]
        try:
            server.start()
        except LocalServerError as exc:
            _unavailable(str(exc))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(kill=True)


@pytest.fixture(scope="session")
def pg_admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DSN of a PostgreSQL server where the tests may create databases."""
    configured = os.environ.get("EV_TEST_PG_DSN")
    if configured:
        yield configured
        return
    server = PostgresServer(server_directory("ev-test-pg-"))
    try:
        server.start()
    except LocalServerError as exc:
        _unavailable(str(exc))
    yield server.dsn()
    server.stop(mode="immediate")
    shutil.rmtree(server.directory, ignore_errors=True)


def _with_dbname(dsn: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


def create_database(admin_dsn: str, label: str) -> str:
    name = f"t_{label}_{uuid.uuid4().hex[:8]}".lower().replace("-", "_")[:60]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _with_dbname(admin_dsn, name)


def drop_database(admin_dsn: str, dsn: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def database(pg_admin_dsn: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database for the test module; its DSN."""
    dsn = create_database(pg_admin_dsn, request.module.__name__.rsplit(".", 1)[-1])
    yield dsn
    drop_database(pg_admin_dsn, dsn)


@pytest.fixture
def fresh_db(pg_admin_dsn: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database for one test; its DSN."""
    dsn = create_database(pg_admin_dsn, request.node.name[:20])
    yield dsn
    drop_database(pg_admin_dsn, dsn)


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[Callable[[], PostgresServer]]:
    """Factory for PostgreSQL servers a test may stop and restart."""
    servers: list[PostgresServer] = []

    def start() -> PostgresServer:
        server = PostgresServer(server_directory("ev-test-pg-"))
        try:
            server.start()
        except LocalServerError as exc:
            _unavailable(str(exc))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(mode="immediate")
        shutil.rmtree(server.directory, ignore_errors=True)
