"""Detector thresholds tuned without code: ``DetectorConfig.tuned``, the offline mode's
``--detector NAME=VALUE``, ``EDGE_DETECTOR`` for a running agent; and every session says
which thresholds found it (``detectorVersion``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from edge_agent.agent import EdgeAgent
from edge_agent.detector import DETECTOR_VERSION, DetectorConfig
from edge_agent.metrics import EdgeMetrics
from edge_agent.settings import EdgeSettings
from edge_agent.store import TRANSACTION, AgentStore
from tests.unit.test_offline import cli, minutes, write_csv


def half_hour_load(m: int) -> float:
    """A 3.6 kW load for 30 min from 02:00: under the default 45 min a charge must hold."""
    return 3600.0 if 120 <= m < 150 else 0.0


def test_tuned_thresholds_replace_the_defaults_and_name_themselves_in_the_version():
    assert DetectorConfig.tuned({}) == DetectorConfig()
    assert DetectorConfig().version == DETECTOR_VERSION
    tuned = DetectorConfig.tuned({"confirm_s": 1200, "household_min_sessions": 6.0})
    assert tuned.confirm_s == 1200.0
    assert tuned.household_min_sessions == 6
    assert isinstance(tuned.household_min_sessions, int)
    assert tuned.version == f"{DETECTOR_VERSION}+confirm_s=1200,household_min_sessions=6"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"confrim_s": 1200}, "did you mean confirm_s"),
        ({"confirm_s": -1}, "confirm_s"),
        ({"confirm_s": float("nan")}, "confirm_s"),
        ({"confirm_s": True}, "not a number"),
        ({"confirm_s": "1200"}, "not a number"),
        ({"household_min_sessions": 2.5}, "not whole"),
        ({"min_ev_power_w": 30_000}, "max_ev_power_w"),
    ],
)
def test_a_threshold_that_cannot_be_is_refused_by_name(overrides, message):
    with pytest.raises(ValueError, match=message):
        DetectorConfig.tuned(overrides)


def test_the_offline_mode_takes_tuned_thresholds_and_its_sessions_say_so(tmp_path):
    """A half-hour charge is under the 45 min a candidate holds by default; told 20 min, the
    offline mode finds it, and its record names the threshold changed. Control: the default."""
    path = write_csv(tmp_path / "short.csv", minutes(6, half_hour_load))
    default = cli(path)
    assert default.returncode == 0, default.stderr
    assert default.stdout == ""
    tuned = cli(path, "--detector", "confirm_s=1200")
    assert tuned.returncode == 0, tuned.stderr
    [record] = [json.loads(line) for line in tuned.stdout.splitlines()]
    assert record["ChargeStartTime"] == "2024-07-03T02:00:00Z"
    assert record["ChargeEndTime"] == "2024-07-03T02:30:00Z"
    assert record["detectorVersion"] == f"{DETECTOR_VERSION}+confirm_s=1200"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("confrim_s=1200", "did you mean confirm_s"),
        ("confirm_s", "NAME=VALUE"),
        ("confirm_s=soon", "NAME=VALUE"),
    ],
)
def test_the_offline_mode_refuses_a_threshold_that_cannot_be(tmp_path, setting, message):
    out = cli(write_csv(tmp_path / "m.csv", minutes(2, half_hour_load)), "--detector", setting)
    assert out.returncode == 2
    assert message in out.stderr
    assert out.stdout == ""


def agent_transactions(store_path: Path, settings: EdgeSettings, rows) -> list[dict]:
    """The transaction messages a running agent with ``settings``' thresholds queues."""
    store = AgentStore(store_path)
    try:
        agent = EdgeAgent(
            site_id="s",
            store=store,
            metrics=EdgeMetrics(CollectorRegistry()),
            detector_config=settings.detector_config(),
        )
        agent.process(("m", t.timestamp(), p, e) for t, p, e in rows)
        queued = store.pending(0, 100_000)
    finally:
        store.close()
    return [json.loads(q.payload) for q in queued if q.kind == TRANSACTION]


def test_a_running_agent_takes_its_thresholds_from_its_settings(tmp_path, monkeypatch):
    """``EDGE_DETECTOR`` as JSON: refused at startup when a name is unknown; taken, the agent
    finds the half-hour charge (on its second day: the first it holds every candidate to the
    cycler's rule) and its messages carry the threshold. Control: the defaults."""
    rows = minutes(30, lambda m: half_hour_load(m - 1440))
    assert agent_transactions(tmp_path / "control.sqlite3", EdgeSettings(), rows) == []
    monkeypatch.setenv("EDGE_DETECTOR", '{"confrim_s": 1200}')
    with pytest.raises(ValidationError, match="did you mean confirm_s"):
        EdgeSettings()
    monkeypatch.setenv("EDGE_DETECTOR", '{"confirm_s": 1200}')
    queued = agent_transactions(tmp_path / "tuned.sqlite3", EdgeSettings(), rows)
    assert [m["transactionState"] for m in queued] == ["Started", "SuspendedEV", "Ended"]
    assert (queued[-1]["startTime"], queued[-1]["stopTime"]) == (
        "2024-07-04T02:00:00Z",
        "2024-07-04T02:30:00Z",
    )
    assert {m["detectorVersion"] for m in queued} == {f"{DETECTOR_VERSION}+confirm_s=1200"}
