"""``python -m ingestor``: run | migrate | registry load FILE | dead-letter list|replay."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import psycopg

from ingestor.deadletters import list_dead_letters, replay
from ingestor.registry import load
from ingestor.service import run
from ingestor.settings import IngestorSettings
from ingestor.store import Store
from runtime.migrations import MigrationError, migrate


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ingestor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="consume, validate, store and pair (settings from INGEST_*)")
    sub.add_parser("migrate", help="apply the storage migrations (idempotent)")
    registry = sub.add_parser("registry", help="meter registry")
    registry_sub = registry.add_subparsers(dest="action", required=True)
    load_cmd = registry_sub.add_parser("load", help="load a CIS/MDMS/GIS CSV export")
    load_cmd.add_argument("file", type=Path)
    dead = sub.add_parser("dead-letter", help="inspect and re-ingest rejected messages")
    dead_sub = dead.add_subparsers(dest="action", required=True)
    list_cmd = dead_sub.add_parser("list", help="unresolved dead letters, oldest first")
    list_cmd.add_argument("--all", action="store_true", help="include resolved ones")
    list_cmd.add_argument("--limit", type=int, default=100)
    replay_cmd = dead_sub.add_parser("replay", help="re-validate and ingest what now passes")
    replay_cmd.add_argument("ids", type=int, nargs="*", help="ids to replay (default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = IngestorSettings()
    dsn = settings.database_url.get_secret_value()
    try:
        if args.command == "run":
            return run(settings)
        flavour, applied = migrate(dsn, flavour=settings.db_flavour)
        if args.command == "migrate":
            print(f"{flavour.value}: applied {', '.join(applied) or 'nothing (up to date)'}")
            return 0
        with psycopg.connect(dsn) as conn:
            if args.command == "registry":
                with args.file.open(newline="", encoding="utf-8-sig") as lines:
                    report = load(conn, lines, source=args.file.name)
                print(f"added {report.added}, changed {report.changed}, unchanged "
                      f"{report.unchanged}, rejected {len(report.rejected)}; "
                      f"events re-enriched {report.events_enriched}")  # fmt: skip
                for error in report.rejected:
                    print(f"  line {error.line}: {error.reason}", file=sys.stderr)
                return 1 if report.rejected else 0
            if args.action == "list":
                for letter in list_dead_letters(conn, include_resolved=args.all, limit=args.limit):
                    state = f"resolved {letter.resolved_at:%Y-%m-%dT%H:%M:%SZ}" if (
                        letter.resolved_at) else f"replays {letter.replay_count}"  # fmt: skip
                    print(f"{letter.id}\t{letter.received_at:%Y-%m-%dT%H:%M:%S%z}\t"
                          f"{letter.topic}\t{state}\t{letter.reason}\t"
                          f"{letter.payload[:120]!r}")  # fmt: skip
                return 0
            result = replay(
                conn,
                Store(use_copy=settings.use_copy),
                ids=args.ids or None,
                prefix=settings.mqtt.topic_prefix,
                max_bytes=settings.max_payload_bytes,
            )
            conn.commit()
            print(f"ingested {result.ingested}, still invalid {result.still_invalid}")
            return 0
    except (MigrationError, psycopg.OperationalError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
