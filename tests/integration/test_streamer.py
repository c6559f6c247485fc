"""The streamer as a real process: subscriptions API, live delivery, faults, replicas, and
subscriber credentials on a real Mosquitto with a real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from ingestor.registry import load as load_registry
from runtime.migrations import migrate
from schemas.itron import StreamEvent, StreamPayload
from schemas.timefmt import format_utc
from schemas.topics import subscription_topic
from tests.conftest import BrokerAddress
from tests.integration.eventdata import insert_events, make_events
from tests.integration.services import (
    ROOT,
    EventCollector,
    ServiceProcess,
    publish_all,
    scrape,
    session,
    start_ingestor_and_streamer,
    unique_prefix,
    wait_until,
)

pytestmark = pytest.mark.integration

REGISTRY = (
    "MeterId,MeterNumber,ElectronicSerialNumber,ServicePointId,PremiseId,TransformerId,"
    "FeederId,ValidFrom,ValidTo\n"
    "m-1,N1,E1,SP1,P1,XF-A,F1,2025-01-01,\n"
    "m-2,N2,E2,SP2,P2,XF-A,F1,2025-01-01,\n"
    "m-3,N3,E3,SP3,P3,XF-B,F1,2025-01-01,2026-05-04T19:00:00Z\n"
    "m-3,N3,E3,SP3,P3,XF-C,F2,2026-05-04T19:00:00Z,\n"
    "m-4,N4,E4,SP4,P4,XF-B,F2,2025-01-01,\n"
)


def cli(dsn: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "streamer", *args],
        cwd=ROOT,
        env={**os.environ, "STREAM_DATABASE_URL": dsn, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class Pipeline:
    dsn: str
    prefix: str
    broker_port: int
    api: str
    streamer: ServiceProcess

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.api, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )


@pytest.fixture(scope="module")
def pipeline(
    database: str, broker: BrokerAddress, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    """Ingestor and streamer processes on the shared broker, with a meter registry."""
    logs = tmp_path_factory.mktemp("pipeline")
    migrate(database)
    with psycopg.connect(database) as conn:
        report = load_registry(conn, REGISTRY.splitlines(keepends=True), source="test")
        assert not report.rejected
    prefix = unique_prefix()
    ingestor, streamer, http_port = start_ingestor_and_streamer(
        dsn=database, port=broker.port, prefix=prefix, logs=logs, name="stream",
        STREAM_EXPORT_DIR=str(logs / "exports"),
    )  # fmt: skip
    api = f"http://127.0.0.1:{http_port}"
    yield Pipeline(database, prefix, broker.port, api, streamer)
    assert streamer.stop() == 0, streamer.log()[-3000:]
    ingestor.stop()


@pytest.fixture(scope="module")
def adms(pipeline: Pipeline) -> str:
    """An API token of subscriber ``adms``, issued through the CLI."""
    issued = cli(pipeline.dsn, "subscribers", "issue", "adms")
    assert issued.returncode == 0, issued.stderr
    return str(orjson.loads(issued.stdout)["api_token"])


def test_subscriptions_api_lifecycle_and_errors(pipeline: Pipeline, adms: str) -> None:
    other = cli(pipeline.dsn, "subscribers", "issue", "planner")
    other_token = orjson.loads(other.stdout)["api_token"]
    base = "/dpss/api/v1/subscriptions"
    with pipeline.client(adms) as api, pipeline.client(other_token) as stranger:
        assert httpx.get(pipeline.api + base, timeout=5).status_code == 401
        assert api.get(base, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert api.get(base, headers={"DataSubscriberId": "planner"}).status_code == 403

        bad = api.post(base, json={"EntityType": "Transformer", "EntityId": []})
        assert bad.status_code == 400
        assert "needs at least one EntityId" in bad.text
        unknown = api.post(base, json={"EntityType": "Substation", "EntityId": ["x"]})
        assert unknown.status_code == 400
        assert unknown.json()["parameter"] == "EntityType"
        assert api.post(base, json={"EntityType": "None", "EntityId": ["x"]}).status_code == 400

        made = api.post(
            base,
            json={"EntityType": "transformer", "EntityId": ["XF-A", "XF-A", "XF-B"]},
            headers={"Itron-CorrelationId": "corr-42", "DataSubscriberId": "adms"},
        )
        assert made.status_code == 201, made.text
        assert made.headers["Itron-CorrelationId"] == "corr-42"
        view = made.json()
        sub_id = view["SubscriptionId"]
        assert view["EntityType"] == "Transformer"
        assert view["EntityId"] == ["XF-A", "XF-B"]
        assert view["Topic"] == subscription_topic(sub_id, prefix=pipeline.prefix)
        assert view["State"] == "active"
        assert api.get(base).headers["Itron-CorrelationId"]  # generated when absent

        assert sub_id in [s["SubscriptionId"] for s in api.get(base).json()]
        assert api.get(f"{base}/{sub_id}").json() == view
        assert stranger.get(f"{base}/{sub_id}").status_code == 404
        assert stranger.post(f"{base}/{sub_id}/pause").status_code == 404
        assert sub_id not in [s["SubscriptionId"] for s in stranger.get(base).json()]

        assert api.post(f"{base}/{sub_id}/pause").json()["State"] == "paused"
        assert api.post(f"{base}/{sub_id}/resume").json()["State"] == "active"
        assert stranger.delete(f"{base}/{sub_id}").status_code == 404
        assert api.delete(f"{base}/{sub_id}").status_code == 204
        assert api.get(f"{base}/{sub_id}").status_code == 404
        assert api.delete(f"{base}/{sub_id}").status_code == 404
        assert "paths" in httpx.get(pipeline.api + "/openapi.json", timeout=5).json()


def test_cli_manages_subscriptions_and_refuses_bad_filters(pipeline: Pipeline, adms: str) -> None:
    made = cli(pipeline.dsn, "subscriptions", "create", "--subscriber", "adms",
               "--entity-type", "Meter", "--entity-id", "m-1")  # fmt: skip
    assert made.returncode == 0, made.stderr
    sub_id = orjson.loads(made.stdout)["SubscriptionId"]
    listed = orjson.loads(cli(pipeline.dsn, "subscriptions", "list", "--subscriber", "adms").stdout)
    assert sub_id in [s["SubscriptionId"] for s in listed]
    paused = cli(pipeline.dsn, "subscriptions", "pause", sub_id)
    assert orjson.loads(paused.stdout)["State"] == "paused"
    assert cli(pipeline.dsn, "subscriptions", "delete", sub_id).returncode == 0
    gone = cli(pipeline.dsn, "subscriptions", "show", sub_id)
    assert gone.returncode == 2
    assert sub_id in gone.stderr
    bad = cli(pipeline.dsn, "subscriptions", "create", "--subscriber", "adms",
              "--entity-type", "Feeder", "--entity-id", "F1")  # fmt: skip
    assert bad.returncode == 2
    assert "invalid subscription" in bad.stderr


def _subscribe(api: httpx.Client, entity_type: str, *ids: str, **extra: Any) -> dict[str, Any]:
    made = api.post(
        "/dpss/api/v1/subscriptions",
        json={"EntityType": entity_type, "EntityId": list(ids), **extra},
    )
    assert made.status_code == 201, made.text
    return dict(made.json())


def test_filters_of_every_entity_type_deliver_exactly_the_matching_seed_001_events(
    pipeline: Pipeline, adms: str
) -> None:
    with pipeline.client(adms) as api:
        subs = {
            "all": _subscribe(api, "None"),
            "sp": _subscribe(api, "ServicePoint", "SP2"),
            "meter": _subscribe(api, "Meter", "m-1", "m-4"),
            "esn": _subscribe(api, "ESN", "E3"),
            "tx": _subscribe(api, "Transformer", "XF-A"),
            "tx-as-of": _subscribe(api, "Transformer", "XF-C"),
            "premises": _subscribe(api, "Premises", "P4"),
            "paused": _subscribe(api, "None"),
        }
        api.post(f"/dpss/api/v1/subscriptions/{subs['paused']['SubscriptionId']}/pause")
    topics = {name: sub["Topic"] for name, sub in subs.items()}
    collector = EventCollector(pipeline.broker_port, topics.values())
    try:
        wait_until(collector.subscribed, timeout=10, what="the subscriber's SUBACK")
        # m-3 charges before and after its move from XF-B to XF-C at 19:00.
        sessions = {
            "f-1": ("m-1", 0), "f-2": ("m-2", 0), "f-3a": ("m-3", 0),
            "f-3b": ("m-3", 180), "f-4": ("m-4", 0), "f-9": ("m-9", 0),
        }  # fmt: skip
        publish_all(
            pipeline.broker_port,
            [
                m
                for tid, (meter, at) in sessions.items()
                for m in session(pipeline.prefix, meter, tid, at)
            ],
        )
        expected = {
            "all": set(sessions),
            "sp": {"f-2"},
            "meter": {"f-1", "f-4"},
            "esn": {"f-3a", "f-3b"},
            "tx": {"f-1", "f-2"},
            "tx-as-of": {"f-3b"},
            "premises": {"f-4"},
            "paused": set(),
        }
        wait_until(
            lambda: len(set(collector.event_ids(topics["all"]))) == 2 * len(sessions),
            timeout=30,
            what="every start and end on the catch-all subscription",
        )
        time.sleep(0.5)  # anything wrongly routed would have arrived with the rest
        for name, wanted in expected.items():
            got = collector.event_ids(topics[name])
            assert sorted(got) == sorted(f"{t}:{k}" for t in wanted for k in ("start", "end")), name

        with psycopg.connect(pipeline.dsn) as conn:
            stored = {
                row[0]: row[1:]
                for row in conn.execute(
                    "SELECT transaction_id, service_point_id, meter_id, meter_number, esn,"
                    " transformer_id, premise_id, received_time, charge_start_time,"
                    " charge_end_time, charge_w, charge_duration_h, charge_energy_wh"
                    " FROM charging_events"
                )
            }
        seen: dict[str, dict[str, Any]] = {}
        for topic, events, props in collector.messages:
            if topic != topics["all"]:
                continue
            StreamPayload.model_validate({"EVChargingEvents": events})
            ids = [value for name, value in props if name == "event-id"]
            kinds = [value for name, value in props if name == "kind"]
            assert len(ids) == len(kinds) == len(events)
            for event_id, kind, event in zip(ids, kinds, events, strict=True):
                assert event_id.endswith(f":{kind}")
                assert list(event) == [f.alias for f in StreamEvent.model_fields.values()], (
                    "seed 001 field names and order"
                )
                seen[event_id] = event
        for tid, (meter, _) in sessions.items():
            sp, meter_id, number, esn, tx, premise, received, start, end, _, dur, energy = stored[
                tid
            ]
            # An unregistered meter keeps its own id as MeterID; the rest is unknown (null).
            identity = {"ServicePointID": sp, "MeterID": meter_id or meter, "MeterNumber": number,
                        "ESN": esn, "TransformerID": tx, "PremiseID": premise}  # fmt: skip
            begin, finish = seen[f"{tid}:start"], seen[f"{tid}:end"]
            for event in (begin, finish):
                assert {k: event[k] for k in identity} == identity
                assert event["ReceivedTime"] == received.isoformat().replace("+00:00", "Z")
            assert begin["ChargeStartTime"] == start.isoformat().replace("+00:00", "Z")
            assert begin["ChargeW"] == 7200.0
            assert (
                begin["ChargeEndTime"] is begin["ChargeDuration"] is begin["ChargeEnergy"] is None
            )
            assert finish["ChargeEndTime"] == end.isoformat().replace("+00:00", "Z")
            assert (
                (finish["ChargeDuration"], finish["ChargeEnergy"])
                == (dur, energy)
                == (2.0, 12000.0)
            )
            assert finish["ChargeStartTime"] is finish["ChargeW"] is None
        assert seen["f-3a:start"]["TransformerID"] == "XF-B"
        assert seen["f-3b:start"]["TransformerID"] == "XF-C"
        assert seen["f-9:start"]["ServicePointID"] is None  # unknown meter: identity unknown

        metrics = scrape(pipeline.streamer.metrics_url())
        assert metrics['ev_stream_events_total{state="paused"}'] >= 2 * len(sessions)
        assert metrics["ev_stream_outbox_backlog_rows"] >= 0
    finally:
        collector.close()


def test_a_new_subscription_starts_now_unless_a_start_position_is_asked_for(
    pipeline: Pipeline, adms: str
) -> None:
    publish_all(pipeline.broker_port, session(pipeline.prefix, "m-2", "before-sub", 600))
    wait_until(
        lambda: (
            _count(
                pipeline.dsn,
                "SELECT count(*) FROM outbox WHERE transaction_id ="
                " 'before-sub' AND delivered_at IS NOT NULL",
            )
            == 2
        ),
        timeout=30,
        what="the earlier session to be delivered",
    )
    with pipeline.client(adms) as api:
        now = _subscribe(api, "Meter", "m-2")
        history = _subscribe(api, "Meter", "m-2", StartPosition=0)
    collector = EventCollector(pipeline.broker_port, [now["Topic"], history["Topic"]])
    try:
        wait_until(collector.subscribed, timeout=10, what="SUBACK")
        publish_all(pipeline.broker_port, session(pipeline.prefix, "m-2", "after-sub", 900))
        wait_until(
            lambda: len(collector.event_ids(now["Topic"])) == 2, timeout=30, what="new events"
        )
        assert sorted(collector.event_ids(now["Topic"])) == ["after-sub:end", "after-sub:start"]
        with psycopg.connect(pipeline.dsn) as conn:
            kept = conn.execute(
                "SELECT transaction_id || ':' || kind FROM outbox WHERE asset_id = 'm-2'"
            ).fetchall()
        wanted = sorted(event_id for (event_id,) in kept)
        assert {"before-sub:start", "after-sub:end"} <= set(wanted)
        wait_until(
            lambda: len(collector.event_ids(history["Topic"])) >= len(wanted),
            timeout=30,
            what="the replay",
        )
        replayed = collector.event_ids(history["Topic"])
        assert sorted(replayed) == wanted
        assert replayed.index("before-sub:start") < replayed.index("before-sub:end")
        assert "before-sub:start" not in collector.event_ids(now["Topic"])
    finally:
        collector.close()


def _count(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def test_the_running_streamer_serves_the_data_api_and_runs_batch_jobs(
    pipeline: Pipeline, adms: str
) -> None:
    """On-demand and batch requests through the live process: its own export worker, woken by
    the request, writes the file; the download matches the database row for row."""
    events = make_events(40, now=datetime.now(UTC))
    with psycopg.connect(pipeline.dsn) as conn:
        insert_events(conn, events)
    ours = ["M-001", "M-002"]
    mine = sorted((e for e in events if e.meter_id in ours and e.charge_end_time is not None),
                  key=lambda e: (e.charge_start_time, e.transaction_id))  # fmt: skip
    base = "/dpss/api/v1/subscriptions"
    with pipeline.client(adms) as api:
        sub = api.post(base, json={"EntityType": "Meter", "EntityId": ours}).json()
        path = f"{base}/{sub['SubscriptionId']}"
        page = api.post(path + "/on-demand", json={})
        assert page.status_code == 200, page.text
        assert [r["ChargeStartTime"] for r in page.json()] == [
            format_utc(e.charge_start_time) for e in reversed(mine)
        ]
        job = api.post(path + "/batch-request", json={"filetype": "csv", "tokens": {}}).json()
        done = wait_until(
            lambda: (
                (j := api.get(f"{path}/batch-request/{job['JobId']}").json())["Status"] == "done"
                and j
            ),
            timeout=20,
            what="the export job",
        )
        assert done["RowCount"] == len(mine)
        lines = api.get(done["Download"]).text.splitlines()
    assert lines[0].startswith("ReceivedTime,ServicePointId,MeterId")
    assert [line.split(",")[7] for line in lines[1:]] == [
        format_utc(e.charge_start_time) for e in mine
    ]
    metrics = scrape(pipeline.streamer.metrics_url())
    assert metrics['ev_stream_export_jobs_total{status="done"}'] == 1
    assert metrics["ev_stream_export_rows_total"] == len(mine)
    assert metrics["ev_stream_on_demand_query_seconds_count"] >= 1
