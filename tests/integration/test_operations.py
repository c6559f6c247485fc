"""Operations: the deploy files pass the real tools (promtool), every service's /metrics passes
``promtool check metrics``, and a real Prometheus scrapes the running services with the
project's alert rules loaded."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from runtime.localservers import free_port
from runtime.migrations import migrate
from tests.conftest import BrokerAddress, _unavailable
from tests.integration.services import (
    ROOT,
    ServiceProcess,
    ingestor_env,
    streamer_env,
    unique_prefix,
    wait_until,
)

pytestmark = pytest.mark.integration
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        _unavailable(f"{name} is not installed (scripts/setup.sh installs it)")
    assert path is not None
    return path


def run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60,
                          check=False, cwd=PROMETHEUS_DIR)  # fmt: skip


def test_prometheus_config_rules_and_rule_tests_pass_promtool() -> None:
    promtool = tool("promtool")
    for argv in (
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "alerts.yml"),
        ("test", "rules", "alerts_test.yml"),
    ):
        result = run(promtool, *argv)
        assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"][0]["rules"]
    tested = (PROMETHEUS_DIR / "alerts_test.yml").read_text()
    untested = [r["alert"] for r in rules if f"alertname: {r['alert']}" not in tested]
    assert not untested, untested


def test_deploy_files_name_real_settings_and_files() -> None:
    """The compose file and Kubernetes manifests parse, and every EDGE_/INGEST_/STREAM_
    variable they set is a real setting (a typo would be silently ignored in production)."""
    from edge_agent.settings import EdgeSettings
    from ingestor.settings import IngestorSettings
    from streamer.settings import StreamerSettings

    def known(settings: Any, prefix: str) -> set[str]:
        names = set()
        for name, info in settings.model_fields.items():
            names.add(f"{prefix}{name.upper()}")
            nested = getattr(info.annotation, "model_fields", None)
            for sub in nested or {}:
                names.add(f"{prefix}{name.upper()}__{sub.upper()}")
        return names

    valid = (known(EdgeSettings, "EDGE_") | known(IngestorSettings, "INGEST_")
             | known(StreamerSettings, "STREAM_"))  # fmt: skip
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    manifests = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "ev-pipeline.yaml").read_text()))
    assert {m["kind"] for m in manifests} >= {"ConfigMap", "StatefulSet", "Deployment"}
    used = set(manifests[0]["data"])
    for service in compose["services"].values():
        used |= set(service.get("environment", {}))
    systemd = (ROOT / "deploy" / "systemd" / "agent.env.example").read_text()
    used |= {line.split("=")[0] for line in systemd.splitlines() if line and line[0] != "#"}
    ours = {name for name in used if name.split("_")[0] in {"EDGE", "INGEST", "STREAM"}}
    assert ours
    assert ours <= valid, sorted(ours - valid)


@pytest.fixture
def services(broker: BrokerAddress, fresh_db: str, tmp_path: Path) -> Iterator[list[str]]:
    """Ingestor, streamer and an edge agent running; their metrics URLs."""
    migrate(fresh_db)
    prefix = unique_prefix()
    started = [
        ServiceProcess("ingestor", ingestor_env(dsn=fresh_db, port=broker.port, prefix=prefix,
                       client_id="ops-ingestor"), tmp_path / "ingestor.log").start(),
        ServiceProcess("streamer", streamer_env(dsn=fresh_db, port=broker.port, prefix=prefix,
                       http_port=free_port()), tmp_path / "streamer.log").start(),
        ServiceProcess("edge_agent", {
            "EDGE_MQTT__PORT": str(broker.port), "EDGE_MQTT__TOPIC_PREFIX": prefix,
            "EDGE_STORE_PATH": str(tmp_path / "edge.sqlite3"), "EDGE_SIMULATOR_METERS": "2",
            "EDGE_SIMULATOR_DAYS": "1", "EDGE_EXIT_WHEN_DONE": "false", "EDGE_METRICS_PORT": "0",
        }, tmp_path / "edge.log").start(),
    ]  # fmt: skip
    try:
        yield [process.metrics_url() for process in started]
    finally:
        for process in started:
            process.stop()
    with psycopg.connect(fresh_db) as conn:
        conn.execute("SELECT 1")


def test_every_service_exposes_lint_clean_metrics_scraped_by_a_real_prometheus(
    services: list[str], tmp_path: Path
) -> None:
    promtool = tool("promtool")
    prometheus = tool("prometheus")
    for url in services:
        text = httpx.get(url, timeout=10).text
        assert "# HELP" in text
        linted = run(promtool, "check", "metrics", stdin=text)
        assert linted.returncode == 0, f"{url}: {linted.stdout}{linted.stderr}"
        for probe in ("/healthz", "/readyz"):
            assert httpx.get(url.replace("/metrics", probe), timeout=10).status_code == 200

    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [url.split("/")[2]]}]}
            for job, url in zip(("ingestor", "streamer", "edge-agents"), services, strict=True)
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        server = subprocess.Popen(
            [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api/v1"
    try:

        def targets_up() -> bool:
            try:
                active = httpx.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
            except (httpx.HTTPError, KeyError, ValueError):
                return False
            return len(active) == 3 and all(t["health"] == "up" for t in active)

        wait_until(targets_up, timeout=60, what="Prometheus to scrape all three services")
        time.sleep(2)
        for query in ("ev_ingest_broker_connected", "ev_stream_outbox_backlog_rows",
                      "ev_edge_broker_connected"):  # fmt: skip
            result = httpx.get(f"{api}/query", params={"query": query}, timeout=5).json()
            assert result["data"]["result"], query
        connected = httpx.get(f"{api}/query", params={"query": "ev_edge_broker_connected"},
                              timeout=5).json()["data"]["result"][0]["value"][1]  # fmt: skip
        assert connected == "1"
        groups = httpx.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        defined = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"][0]["rules"]
        assert len(rules) == len(defined) == 10
        assert all(rule["health"] == "ok" for rule in rules), rules
    finally:
        server.terminate()
        server.wait(timeout=30)
