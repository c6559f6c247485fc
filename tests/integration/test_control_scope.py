"""Control scopes (seed 003) on a real PostgreSQL: a subscriber limits only the sessions on the
entities the operator granted it, as of each session's start, and is told nothing of others."""

from __future__ import annotations

from datetime import timedelta

import orjson
import psycopg
import pytest

from runtime.migrations import Flavour, available, migrate
from schemas.edrv import ActionType, LimitUnit, PowerLimit
from schemas.subscriptions import ControlEntityType, ControlScope
from streamer import powerlimits, subscriptions
from tests.integration.eventdata import NOW, Event, insert_events, meter_identity
from tests.integration.test_streamer import cli

LIMIT = PowerLimit(unit=LimitUnit.POWER, limit=3000)


def open_session(meter: int) -> Event:
    """An ongoing session on meter ``meter`` (see ``meter_identity``: 49 is unregistered)."""
    return Event(
        transaction_id=f"open-{meter}", asset_id=f"dev-{meter:03d}",
        charge_start_time=NOW - timedelta(hours=1), charge_end_time=None,
        received_time=NOW - timedelta(minutes=59), charge_w=7200.0, charge_duration_h=None,
        charge_energy_wh=None, **meter_identity(meter),  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.fixture(scope="module")
def sessions(database: str) -> str:
    migrate(database)
    with psycopg.connect(database) as conn:
        insert_events(conn, [open_session(m) for m in (1, 2, 49)])
        subscriptions.issue_credentials(conn, "aggregator")
    return database


def limitable(dsn: str, subscriber: str) -> set[str]:
    """The sessions the subscriber's set_power_limit is accepted for (404 for the others)."""
    accepted, refused = set(), {}
    with psycopg.connect(dsn) as conn:
        for tx in ("open-1", "open-2", "open-49"):
            try:
                action = powerlimits.request(
                    conn, subscriber, tx, ActionType.SET_POWER_LIMIT, LIMIT,
                    expires_in=timedelta(minutes=1), now=NOW,
                )  # fmt: skip
            except powerlimits.SessionNotControllableError as exc:
                refused[tx] = (exc.status_code, str(exc))
                continue
            assert action.session == tx
            accepted.add(tx)
        conn.rollback()  # nothing sent: the next scope starts from the same actions
    assert refused == {
        tx: (404, f"no session {tx} that this subscriber may limit") for tx in refused
    }
    return accepted


def scope(dsn: str, *args: str) -> dict[str, object]:
    done = cli(dsn, "subscribers", "scope", "aggregator", *args)
    assert done.returncode == 0, done.stderr
    shown: dict[str, object] = orjson.loads(done.stdout)
    return shown


def test_a_subscriber_limits_only_the_sessions_in_the_scope_the_operator_granted(
    sessions: str,
) -> None:
    assert scope(sessions) == {"DataSubscriberId": "aggregator", "ControlScope": None}
    assert limitable(sessions, "aggregator") == set()  # issued: no control until granted

    shown = scope(sessions, "--entity-type", "Transformer", "--entity-id", "XF-1")
    assert shown["ControlScope"] == {"EntityType": "Transformer", "EntityId": ["XF-1"]}
    assert limitable(sessions, "aggregator") == {"open-1"}

    scope(sessions, "--entity-type", "Meter", "--entity-id", "M-001", "--entity-id", "M-002")
    assert limitable(sessions, "aggregator") == {"open-1", "open-2"}

    # A feeder (not one of seed 001's entity types): meter 1 is on F-1, meter 2 on F-0.
    shown = scope(sessions, "--entity-type", "feeder", "--entity-id", "F-1")
    assert shown["ControlScope"] == {"EntityType": "Feeder", "EntityId": ["F-1"]}
    assert limitable(sessions, "aggregator") == {"open-1"}

    scope(sessions, "--entity-type", "None")  # every session, the unregistered meter's too
    assert limitable(sessions, "aggregator") == {"open-1", "open-2", "open-49"}

    assert scope(sessions, "--withdraw")["ControlScope"] is None
    assert limitable(sessions, "aggregator") == set()


def test_a_bad_scope_is_refused_with_a_reason_and_changes_nothing(sessions: str) -> None:
    scope(sessions, "--entity-type", "Premises", "--entity-id", "P-002")
    for args, words in (
        (
            ("--entity-type", "Transformer"),
            "invalid control scope: Value error, EntityType "
            "Transformer needs at least one EntityId",
        ),
        (("--entity-type", "None", "--entity-id", "x"), "takes no EntityId"),
        (("--entity-type", "Substation", "--entity-id", "S-1"), "invalid control scope"),
        (("--withdraw", "--entity-type", "None"), "--withdraw takes no --entity-type"),
    ):
        refused = cli(sessions, "subscribers", "scope", "aggregator", *args)
        assert refused.returncode == 2, (args, refused.stdout)
        assert words in refused.stderr, refused.stderr
    unknown = cli(sessions, "subscribers", "scope", "nobody", "--entity-type", "None")
    assert unknown.returncode == 2
    assert "no subscriber nobody" in unknown.stderr
    assert limitable(sessions, "aggregator") == {"open-2"}


def test_subscribers_from_before_scopes_keep_control_of_every_session(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " flavour text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in available():
            if migration.version < 6:
                conn.execute(migration.sql(Flavour.POSTGRES).encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, flavour) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, Flavour.POSTGRES.value),
                )
        subscriptions.issue_credentials(conn, "dso-derms")
    _, applied = migrate(fresh_db)
    assert applied == ["0006_control_scope", "0007_feeder_control_scope"]
    with psycopg.connect(fresh_db) as conn:
        assert subscriptions.control_scope(conn, "dso-derms") == ControlScope(
            EntityType=ControlEntityType.NONE
        )
        subscriptions.issue_credentials(conn, "newcomer")
        assert subscriptions.control_scope(conn, "newcomer") is None
