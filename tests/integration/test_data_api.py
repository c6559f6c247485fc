"""The data API (seed 000) on a real PostgreSQL: on-demand pages and batch-request exports read
back with independent readers (DuckDB, pandas, pyarrow's ORC reader)."""

from __future__ import annotations

import hashlib
import io
import math
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pandas as pd
import psycopg
import pyarrow.orc as pa_orc
import pytest
import uvicorn

from runtime.database import open_pool
from runtime.localservers import free_port
from runtime.migrations import migrate
from schemas.itron import CSV_COLUMNS, FileType
from schemas.timefmt import format_utc, parse_utc
from streamer import exports, subscriptions
from streamer.api import BASE, NEXT_PAGE_HEADER, create_app
from streamer.exports import ExportRunner
from streamer.service import ApiServer
from tests.integration.eventdata import NOW, Event, expected, insert_events, make_events

pytestmark = pytest.mark.integration

EVENTS = make_events()


def wire(event: Event) -> dict[str, Any]:
    return {k: format_utc(v) if isinstance(v, datetime) else v for k, v in event.record().items()}


class Api:
    def __init__(self, client: httpx.Client, token: str, subscriber: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}", "DataSubscriberId": subscriber}

    def post(self, path: str, body: Any, **headers: str) -> Any:
        return self.client.post(path, json=body, headers={**self.headers, **headers})

    def get(self, path: str) -> Any:
        return self.client.get(path, headers=self.headers)

    def subscribe(self, entity_type: str = "None", ids: list[str] | None = None) -> str:
        body = {"EntityType": entity_type, "EntityId": ids or []}
        response = self.post(BASE, body)
        assert response.status_code == 201, response.text
        return str(response.json()["SubscriptionId"])

    def on_demand_all(self, subscription: str, body: dict[str, Any]) -> tuple[list[Any], int]:
        """Every page; the records and how many pages it took."""
        records: list[Any] = []
        pages = 0
        token = None
        while True:
            response = self.post(f"{BASE}/{subscription}/on-demand",
                                 {**body, **({"PageToken": token} if token else {})})  # fmt: skip
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page) <= 1000
            records += page
            pages += 1
            token = response.headers.get(NEXT_PAGE_HEADER)
            if token is None:
                return records, pages
            assert len(page) == 1000


@pytest.fixture(scope="module")
def data(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    migrate(database)
    with psycopg.connect(database) as conn:
        insert_events(conn, EVENTS)
        ours = subscriptions.issue_credentials(conn, "utility-a")
        theirs = subscriptions.issue_credentials(conn, "utility-b")
    pool = open_pool(database, max_size=4)
    export_dir = tmp_path_factory.mktemp("exports")
    app = create_app(pool, export_dir=export_dir, clock=lambda: NOW)
    port = free_port()
    server = ApiServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = server.start_in_thread()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield {
            "api": Api(client, ours.api_token, "utility-a"),
            "other": Api(client, theirs.api_token, "utility-b"),
            "client": client,
            "pool": pool,
            "export_dir": export_dir,
            "dsn": database,
        }
    server.should_exit = True
    thread.join(timeout=5)
    pool.close()


@pytest.fixture(scope="module")
def everything(data: dict[str, Any]) -> str:
    """A subscription with no filter of its own."""
    return data["api"].subscribe()  # type: ignore[no-any-return]


def test_on_demand_pages_through_every_event_newest_first(
    data: dict[str, Any], everything: str
) -> None:
    """No filter: every completed event of the last 13 months, 1,000 per page, newest first,
    ties broken by session; open sessions and older events are not returned."""
    records, pages = data["api"].on_demand_all(everything, {})
    want = expected(EVENTS)
    assert (len(EVENTS), len(want)) == (2650, 2600)  # not the 20 open nor the 30 too old
    assert pages == 3
    assert records == [wire(e) for e in want]
    first = data["api"].post(f"{BASE}/{everything}/on-demand", {}).json()
    assert list(first[0]) == [
        "ReceivedTime", "ServicePointId", "MeterId", "MeterNumber", "ElectronicSerialNumber",
        "TransformerId", "PremiseId", "FeederId", "ChargeStartTime", "ChargeEndTime", "ChargeW",
        "ChargeDuration", "ChargeEnergy",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("entity_type", "ids", "field"),
    [
        ("ServicePoint", ["SP-001", "SP-017"], "service_point_id"),
        ("Meter", ["M-002"], "meter_id"),
        ("ESN", ["2.16.840.1.114416.003", "2.16.840.1.114416.048"], "esn"),
        ("Transformer", ["XF-4"], "transformer_id"),
        ("premises", ["P-010", "P-011", "nope"], "premise_id"),
    ],
)
def test_on_demand_filters_by_each_entity_type(
    data: dict[str, Any], everything: str, entity_type: str, ids: list[str], field: str
) -> None:
    body = {"EntityType": entity_type, "EntityId": ids}
    records, _ = data["api"].on_demand_all(everything, body)
    want = expected(EVENTS, lambda e: getattr(e, field) in ids)
    assert want
    assert records == [wire(e) for e in want]


def test_the_subscriptions_own_filter_always_applies(data: dict[str, Any]) -> None:
    api = data["api"]
    on_xf1 = api.subscribe("Transformer", ["XF-1"])
    records, _ = api.on_demand_all(on_xf1, {})
    assert records == [wire(e) for e in expected(EVENTS, lambda e: e.transformer_id == "XF-1")]
    # Meter 2 is on XF-2: asking for it through a subscription of XF-1 finds nothing.
    assert api.post(f"{BASE}/{on_xf1}/on-demand",
                    {"EntityType": "Meter", "EntityId": ["M-002"]}).json() == []  # fmt: skip
    narrowed, _ = api.on_demand_all(on_xf1, {"EntityType": "Meter", "EntityId": "M-006"})
    assert narrowed == [wire(e) for e in expected(EVENTS, lambda e: e.meter_id == "M-006")]


def test_on_demand_date_ranges_offsets_and_date_only(data: dict[str, Any], everything: str) -> None:
    api = data["api"]
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 15, 6, tzinfo=UTC)
    in_range = expected(EVENTS, lambda e: start <= e.charge_start_time <= end)
    for body in (
        {"StartEventDate": "2026-03-01", "EndEventDate": "2026-03-15T06:00:00Z"},
        {"StartEventDate": "2026-03-01T00:00:00Z", "EndEventDate": "2026-03-15T08:00:00+02:00"},
        {"StartEventDate": "2026-02-28T19:00:00-05:00", "EndEventDate": "2026-03-15T06:00:00Z"},
    ):
        records, _ = api.on_demand_all(everything, body)
        assert records == [wire(e) for e in in_range], body
    received_from = datetime(2026, 9, 1, tzinfo=UTC)
    by_received, _ = api.on_demand_all(
        everything, {"StartReceivedDatetime": "2026-09-01", "EndReceivedDatetime": "2026-09-10"}
    )
    received_to = datetime(2026, 9, 10, tzinfo=UTC)
    assert by_received == [
        wire(e) for e in expected(EVENTS, lambda e: received_from <= e.received_time <= received_to)
    ]
    # Seed 000 spells it ...DateTime in the batch tokens; the on-demand endpoint takes both.
    same, _ = api.on_demand_all(
        everything, {"StartReceivedDateTime": "2026-09-01", "EndReceivedDateTime": "2026-09-10"}
    )
    assert same == by_received


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({"StartEventDate": "2025-10-20"}, "StartEventDate"),  # before the 13 months
        ({"EndEventDate": "2026-11-23T00:00:01Z"}, "EndEventDate"),  # after today
        ({"StartReceivedDatetime": "2024-01-01T00:00:00Z"}, "StartReceivedDatetime"),
        ({"StartEventDate": "2026-05-02", "EndEventDate": "2026-05-01"}, "EndEventDate"),
        ({"StartEventDate": "2026-13-01"}, "StartEventDate"),
        ({"StartEventDate": "2026-05-01T10:00:00"}, "StartEventDate"),  # no UTC offset
        ({"EndEventDate": "yesterday"}, "EndEventDate"),
        ({"EntityType": "Meter"}, "EntityId"),
        ({"EntityType": "None", "EntityId": ["M-001"]}, "EntityId"),
        ({"EntityType": "Feeder", "EntityId": ["F-1"]}, "EntityType"),
        ({"PageToken": "not-a-token"}, "PageToken"),
        ({"EntityType": "Meter", "EntityId": ["M-\u0000"]}, "EntityId.0"),  # not storable text
        ({"StartEventDate": "9999-12-31T23:30:00-01:00"}, "StartEventDate"),  # beyond year 9999
        ({"Unknown": 1}, "Unknown"),
    ],
)
def test_a_request_that_cannot_run_is_a_400_naming_the_parameter(
    data: dict[str, Any], everything: str, body: dict[str, Any], parameter: str
) -> None:
    response = data["api"].post(f"{BASE}/{everything}/on-demand", body)
    assert response.status_code == 400, response.text
    assert response.json()["parameter"] == parameter
    assert parameter in response.json()["detail"]


def test_the_window_edges_are_whole_days(data: dict[str, Any], everything: str) -> None:
    api = data["api"]
    ok = api.post(f"{BASE}/{everything}/on-demand",
                  {"StartEventDate": "2025-10-21", "EndEventDate": "2026-11-22"})  # fmt: skip
    assert ok.status_code == 200, ok.text


def test_a_page_token_only_continues_its_own_query(data: dict[str, Any], everything: str) -> None:
    api = data["api"]
    first = api.post(f"{BASE}/{everything}/on-demand", {"StartEventDate": "2025-11-01"})
    token = first.headers[NEXT_PAGE_HEADER]
    other = api.post(f"{BASE}/{everything}/on-demand",
                     {"StartEventDate": "2025-12-01", "PageToken": token})  # fmt: skip
    assert other.status_code == 400
    assert other.json()["parameter"] == "PageToken"
    assert "other filters" in other.json()["detail"]


def test_authentication_and_ownership(data: dict[str, Any], everything: str) -> None:
    client: httpx.Client = data["client"]
    path = f"{BASE}/{everything}/on-demand"
    assert client.post(path, json={}).status_code == 401
    wrong = client.post(path, json={}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    mismatch = data["api"].post(path, {}, DataSubscriberId="utility-b")
    assert mismatch.status_code == 403
    # Another subscriber's subscription does not exist for them, whatever they ask.
    assert data["other"].post(path, {}).status_code == 404
    assert data["other"].post(f"{BASE}/{everything}/batch-request",
                              {"filetype": "csv"}).status_code == 404  # fmt: skip
    assert data["other"].get(f"{BASE}/{everything}/batch-request").status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",  # a cloud's instance metadata
        "http://[::1]/hook",
        "http://100.64.0.1/hook",  # carrier-grade NAT
    ],
)
def test_a_webhook_inside_the_operators_network_is_refused(data: dict[str, Any], url: str) -> None:
    """A subscriber cannot make the streamer POST to services behind the operator's firewall:
    such a URL is a 400 naming the address, and nothing is registered."""
    api: Api = data["api"]
    answer = api.post("/api/v1/webhooks", {"url": url})
    assert answer.status_code == 400, answer.text
    assert answer.json()["ok"] is False
    assert "not a public address" in answer.json()["message"]
    assert api.get("/api/v1/webhooks").json() == []


def test_correlation_id_is_echoed_or_generated(data: dict[str, Any], everything: str) -> None:
    api = data["api"]
    path = f"{BASE}/{everything}/on-demand"
    echoed = api.post(path, {}, **{"Itron-CorrelationId": "corr-42"})
    assert echoed.headers["Itron-CorrelationId"] == "corr-42"
    assert len(api.post(path, {}).headers["Itron-CorrelationId"]) == 36
    assert api.post(path, {"StartEventDate": "x"}).headers["Itron-CorrelationId"]


# --- batch requests ----------------------------------------------------------------------


def run_job(data: dict[str, Any], subscription: str, body: dict[str, Any]) -> dict[str, Any]:
    api = data["api"]
    queued = api.post(f"{BASE}/{subscription}/batch-request", body)
    assert queued.status_code == 202, queued.text
    job = queued.json()
    assert job["Status"] == "queued"
    assert queued.headers["Location"].endswith(job["JobId"])
    runner = ExportRunner(data["pool"], data["export_dir"], max_rows=1_000_000)
    while runner.run_once() is not None:
        pass
    done = api.get(f"{BASE}/{subscription}/batch-request/{job['JobId']}").json()
    assert done["Status"] == "done", done
    return done  # type: ignore[no-any-return]


def download(data: dict[str, Any], job: dict[str, Any]) -> bytes:
    response = data["api"].get(job["Download"])
    assert response.status_code == 200
    content: bytes = response.content
    assert len(content) == job["SizeBytes"]
    assert hashlib.sha256(content).hexdigest() == job["Sha256"]
    return content


def as_rows(events: list[Event]) -> list[tuple[Any, ...]]:
    """Export order (oldest first), seed 000's CSV columns."""
    ordered = sorted(events, key=lambda e: (e.charge_start_time, e.transaction_id))
    return [tuple(e.record()[c] for c in CSV_COLUMNS) for e in ordered]


def utc(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, float) and math.isnan(value):  # how pandas reads a null
        return None
    return value


def read_back(filetype: str, content: bytes, path: Path) -> list[tuple[Any, ...]]:
    """The file as rows, through a reader that is not the writer."""
    path.write_bytes(content)
    if filetype == "orc":
        table = pa_orc.ORCFile(str(path)).read()
        assert table.schema.names == list(CSV_COLUMNS)
        assert str(table.schema.field("ChargeStartTime").type) == "timestamp[ns, tz=UTC]"
        frame = pd.read_orc(path)
        return [tuple(utc(v) for v in row) for row in frame.itertuples(index=False)]
    reader = {
        "csv": "read_csv('{}', header = true, all_varchar = true)",
        "json": "read_json('{}', format = 'newline_delimited')",
        "parquet": "read_parquet('{}')",
    }[filetype].format(path)
    with duckdb.connect() as db:
        db.execute("SET TimeZone = 'UTC'")
        relation = db.sql(f"SELECT * FROM {reader}")
        assert relation.columns == list(CSV_COLUMNS)
        rows = relation.fetchall()
    return [tuple(_typed(c, v) for c, v in zip(CSV_COLUMNS, row, strict=True)) for row in rows]


def _typed(column: str, value: Any) -> Any:
    if value is None or value == "":
        return None
    if column in {"ReceivedTime", "ChargeStartTime", "ChargeEndTime"}:
        return value.astimezone(UTC) if isinstance(value, datetime) else parse_utc(value)
    if column in {"ChargeW", "ChargeDuration", "ChargeEnergy"}:
        return float(value)
    return value


@pytest.mark.parametrize("filetype", ["csv", "json", "parquet", "orc"])
def test_batch_export_reads_back_row_for_row(
    data: dict[str, Any], everything: str, filetype: str, tmp_path: Path
) -> None:
    job = run_job(data, everything, {"filetype": filetype.upper(), "tokens": {},
                                     "isOhsRequest": False})  # fmt: skip
    want = as_rows(expected(EVENTS))
    assert job["RowCount"] == len(want)
    content = download(data, job)
    assert read_back(filetype, content, tmp_path / f"export.{filetype}") == want
    if filetype == "csv":
        assert content.splitlines()[0].decode() == ",".join(CSV_COLUMNS)
    if filetype == "parquet":
        frame = pd.read_parquet(io.BytesIO(content))
        assert list(frame.columns) == list(CSV_COLUMNS)
        assert str(frame["ChargeStartTime"].dtype) == "datetime64[us, UTC]"
        assert str(frame["ChargeW"].dtype) == "float64"


TOKENS = {
    "Device": ("dev-007,dev-008", lambda e: e.asset_id in {"dev-007", "dev-008"}),
    "ElectronicSerialNumber": ("2.16.840.1.114416.012", lambda e: e.esn.endswith(".012")),
    "Meter": ("M-013, M-014", lambda e: e.meter_id in {"M-013", "M-014"}),
    "MeterNumber": ("N-015", lambda e: e.meter_number == "N-015"),
    "ServicePoint": ("SP-016", lambda e: e.service_point_id == "SP-016"),
    "Premises": ("P-018", lambda e: e.premise_id == "P-018"),
    "Transformer": ("XF-3", lambda e: e.transformer_id == "XF-3"),
    "Feeder": ("F-1", lambda e: e.feeder_id == "F-1"),
}


@pytest.mark.parametrize("token", list(TOKENS))
def test_each_batch_token_filters(
    data: dict[str, Any], everything: str, token: str, tmp_path: Path
) -> None:
    value, keep = TOKENS[token]
    tokens = dict.fromkeys(
        ["StartEventDate", "EndEventDate", "StartReceivedDateTime", "EndReceivedDateTime",
         *TOKENS], "",
    )  # fmt: skip
    tokens[token] = value
    job = run_job(data, everything, {"filetype": "csv", "tokens": tokens, "isOhsRequest": True})
    want = as_rows(expected(EVENTS, lambda e: e.meter_id is not None and keep(e)))
    assert want
    assert read_back("csv", download(data, job), tmp_path / "t.csv") == want


def test_export_files_are_deleted_after_the_keep_time(
    data: dict[str, Any], everything: str
) -> None:
    """A finished export's file is kept ``export_keep_days`` (7 by default) after it was written,
    then deleted, with a crashed writer's partial file; its download then answers 410 Gone.
    A file still within the keep time stays."""
    job = run_job(data, everything, {"filetype": "csv", "tokens": {}})
    path = exports.file_path(data["export_dir"], job["JobId"], FileType.CSV)
    partial = data["export_dir"] / "crashed.csv.part"
    partial.write_bytes(b"half a file")
    week_and_a_day_ago = time.time() - 8 * 86_400
    os.utime(path, (week_and_a_day_ago, week_and_a_day_ago))
    os.utime(partial, (week_and_a_day_ago, week_and_a_day_ago))
    fresh = run_job(data, everything, {"filetype": "json", "tokens": {}})
    assert exports.sweep_files(data["export_dir"], timedelta(days=7)) == 2
    assert not path.exists()
    assert not partial.exists()
    assert data["api"].get(job["Download"]).status_code == 410
    assert data["api"].get(fresh["Download"]).status_code == 200


def test_batch_dates_and_the_subscription_filter(data: dict[str, Any], tmp_path: Path) -> None:
    api = data["api"]
    on_feeder_0 = api.subscribe("Transformer", ["XF-0", "XF-2"])
    tokens = {"StartEventDate": "2026-03-01", "EndEventDate": "2026-03-31T23:59:59+00:00",
              "StartReceivedDateTime": "2025-12-03", "Feeder": "F-0"}  # fmt: skip
    job = run_job(data, on_feeder_0, {"filetype": "parquet", "tokens": tokens})
    lo, hi = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)
    want = as_rows(
        expected(
            EVENTS,
            lambda e: (
                e.transformer_id in {"XF-0", "XF-2"}
                and e.feeder_id == "F-0"
                and lo <= e.charge_start_time <= hi
            ),
        )
    )
    assert want
    assert read_back("parquet", download(data, job), tmp_path / "d.parquet") == want
    old = {"filetype": "csv", "tokens": {"EndReceivedDateTime": "2020-01-01"}}
    bad = api.post(f"{BASE}/{on_feeder_0}/batch-request", old)
    assert bad.status_code == 400
    assert bad.json()["parameter"] == "EndReceivedDateTime"
    assert api.post(f"{BASE}/{on_feeder_0}/batch-request",
                    {"filetype": "xlsx"}).json()["parameter"] == "filetype"  # fmt: skip
    listed = api.get(f"{BASE}/{on_feeder_0}/batch-request").json()
    assert [j["JobId"] for j in listed] == [job["JobId"]]


def test_a_job_that_fails_reports_its_reason(data: dict[str, Any], everything: str) -> None:
    api = data["api"]
    queued = api.post(f"{BASE}/{everything}/batch-request", {"filetype": "orc"}).json()
    path = f"{BASE}/{everything}/batch-request/{queued['JobId']}"
    waiting = api.get(path + "/file")
    assert waiting.status_code == 409
    assert "queued" in waiting.json()["detail"]
    ExportRunner(data["pool"], data["export_dir"], max_rows=100).run_once()
    failed = api.get(path).json()
    assert failed["Status"] == "failed"
    assert "more than 100 events match" in failed["Reason"]
    assert failed["Download"] is None
    refused = api.get(path + "/file")
    assert refused.status_code == 409
    assert "more than 100 events" in refused.json()["detail"]
    assert not list(data["export_dir"].glob(f"{queued['JobId']}*"))
    assert api.get(f"{BASE}/{everything}/batch-request/nope").status_code == 404


def test_a_job_whose_worker_died_is_taken_up_again_then_given_up(
    data: dict[str, Any], everything: str
) -> None:
    api = data["api"]
    job = api.post(f"{BASE}/{everything}/batch-request",
                   {"filetype": "json", "tokens": {"Meter": "M-020"}}).json()  # fmt: skip
    stale = datetime.now(UTC) - timedelta(minutes=5)
    with psycopg.connect(data["dsn"]) as conn:
        conn.execute("UPDATE export_jobs SET status = 'running', attempts = 1,"
                     " heartbeat_at = %s WHERE job_id = %s", (stale, job["JobId"]))  # fmt: skip
    runner = ExportRunner(data["pool"], data["export_dir"], max_rows=1_000_000)
    assert runner.run_once() == job["JobId"]
    path = f"{BASE}/{everything}/batch-request/{job['JobId']}"
    assert api.get(path).json()["RowCount"] == len(
        expected(EVENTS, lambda e: e.meter_id == "M-020")
    )
    with psycopg.connect(data["dsn"]) as conn:
        conn.execute("UPDATE export_jobs SET status = 'running', attempts = 3,"
                     " heartbeat_at = %s WHERE job_id = %s", (stale, job["JobId"]))  # fmt: skip
    assert runner.run_once() is None
    gave_up = api.get(path).json()
    assert gave_up["Status"] == "failed"
    assert "stopped 3 times" in gave_up["Reason"]


def test_openapi_documents_paging_and_400s(data: dict[str, Any]) -> None:
    spec = data["client"].get("/openapi.json").json()
    on_demand = spec["paths"][BASE + "/{subscription_id}/on-demand"]["post"]
    assert NEXT_PAGE_HEADER in on_demand["responses"]["200"]["headers"]
    assert "PageToken" in on_demand["responses"]["200"]["description"]
    for operations in spec["paths"].values():
        for operation in operations.values():
            assert "422" not in operation["responses"]
            assert "400" in operation["responses"]
