"""Batch-request jobs (seed 000): queued by the API, run in the background by any streamer.

A job's query is validated and fixed when it is requested, so it exports exactly what was
asked even if it starts later. PostgreSQL formats the rows and streams them out with COPY; the
file is written as they arrive (Parquet and ORC converted block by block), so memory stays flat
for millions of rows; it appears under its final name only once complete, with its size and
SHA-256 recorded. A job whose streamer died is taken up again (heartbeat) and fails with a
reason after three tries. Files are deleted ``export_keep_days`` after they were written (a
download then answers 410), and so are a crashed writer's partial files.
When several streamers run, ``export_dir`` must be storage they share.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from schemas.itron import BatchJob, BatchRequest, BatchStatus, BatchTokens, FileType
from streamer.eventquery import EventQuery, export_copy_sql
from streamer.filewriters import WRITERS
from streamer.metrics import StreamMetrics

log = logging.getLogger(__name__)
Conn = psycopg.Connection[Any]

HEARTBEAT_S = 10.0
_BLOCK_BYTES = 1 << 20
STALE_AFTER_S = 120
MAX_ATTEMPTS = 3


class UnknownJobError(LookupError):
    pass


class ExportTooLargeError(RuntimeError):
    pass


_COLUMNS = (
    "job_id, subscription_id, status, filetype, tokens, is_ohs_request, reason, row_count,"
    " size_bytes, sha256, created_at, started_at, finished_at"
)


def _job(row: tuple[Any, ...], base_path: str) -> BatchJob:
    (job_id, subscription_id, status, filetype, tokens, is_ohs, reason, rows, size, sha,
     created, started, finished) = row  # fmt: skip
    done = status == BatchStatus.DONE
    return BatchJob(
        JobId=job_id,
        SubscriptionId=subscription_id,
        Status=BatchStatus(status),
        filetype=FileType(filetype),
        tokens=BatchTokens.model_validate(tokens),
        isOhsRequest=is_ohs,
        Reason=reason,
        RowCount=rows,
        SizeBytes=size,
        Sha256=sha,
        CreatedAt=created,
        StartedAt=started,
        FinishedAt=finished,
        Download=f"{base_path}/{subscription_id}/batch-request/{job_id}/file" if done else None,
    )


def submit(
    conn: Conn,
    subscription_id: str,
    request: BatchRequest,
    query: EventQuery,
    *,
    correlation_id: str | None,
    base_path: str,
) -> BatchJob:
    row = conn.execute(
        "INSERT INTO export_jobs (job_id, subscription_id, filetype, tokens, is_ohs_request,"
        " query, correlation_id) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        f" RETURNING {_COLUMNS}",
        (
            str(uuid.uuid4()),
            subscription_id,
            request.filetype.value,
            Jsonb(request.tokens.model_dump(mode="json", by_alias=True)),
            request.is_ohs_request,
            Jsonb(query.to_json()),
            correlation_id,
        ),
    ).fetchone()
    assert row is not None
    return _job(row, base_path)


def get(conn: Conn, subscription_id: str, job_id: str, *, base_path: str) -> BatchJob:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM export_jobs WHERE subscription_id = %s AND job_id = %s",
        (subscription_id, job_id),
    ).fetchone()
    if row is None:
        raise UnknownJobError(job_id)
    return _job(row, base_path)


def list_jobs(conn: Conn, subscription_id: str, *, base_path: str) -> list[BatchJob]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM export_jobs WHERE subscription_id = %s"
        " ORDER BY created_at DESC LIMIT 100",
        (subscription_id,),
    ).fetchall()
    return [_job(row, base_path) for row in rows]


def file_path(export_dir: Path, job_id: str, filetype: FileType) -> Path:
    return export_dir / f"{job_id}.{filetype.value}"


def sweep_files(export_dir: Path, keep: timedelta, now: float | None = None) -> int:
    """Delete export files (finished or partial) written more than ``keep`` ago; returns how
    many. Idempotent, so every streamer sharing the directory may run it."""
    horizon = (time.time() if now is None else now) - keep.total_seconds()
    removed = 0
    if not export_dir.is_dir():
        return 0
    for entry in os.scandir(export_dir):
        try:
            if entry.is_file() and entry.stat().st_mtime < horizon:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue  # another streamer removed it first
    if removed:
        log.info("deleted %d export files older than %s", removed, keep)
    return removed


@dataclass(frozen=True, slots=True)
class Claimed:
    job_id: str
    filetype: FileType
    query: EventQuery
    attempt: int


class ExportRunner:
    """Runs queued jobs one at a time; several runners (threads or replicas) share the queue."""

    def __init__(
        self,
        pool: ConnectionPool,
        export_dir: Path,
        *,
        max_rows: int,
        metrics: StreamMetrics | None = None,
    ) -> None:
        self.pool = pool
        self.export_dir = export_dir
        self.max_rows = max_rows
        self.metrics = metrics

    def run_once(self) -> str | None:
        """Run the oldest waiting job; its id, or None when there was none."""
        claimed = self._claim()
        if claimed is None:
            return None
        started = time.monotonic()
        target = file_path(self.export_dir, claimed.job_id, claimed.filetype)
        partial = target.with_name(target.name + ".part")
        try:
            rows = self._write(claimed, partial)
            os.replace(partial, target)
            size, digest = _size_and_sha256(target)
        except Exception as exc:  # every failure is reported on the job, never lost
            partial.unlink(missing_ok=True)
            reason = str(exc) if isinstance(exc, ExportTooLargeError) else (
                f"{type(exc).__name__}: {exc}")  # fmt: skip
            log.warning("export %s failed: %s", claimed.job_id, reason)
            self._finish(claimed, BatchStatus.FAILED, reason=reason)
            return claimed.job_id
        self._finish(claimed, BatchStatus.DONE, rows=rows, size=size, sha256=digest)
        if self.metrics is not None:
            self.metrics.export_rows.inc(rows)
            self.metrics.export_duration.labels(claimed.filetype.value).observe(
                time.monotonic() - started
            )
        log.info("export %s done: %d rows, %d bytes", claimed.job_id, rows, size)
        return claimed.job_id

    def observe_queue(self) -> None:
        if self.metrics is None:
            return
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT count(*) FROM export_jobs WHERE status IN ('queued', 'running')"
            ).fetchone()
        self.metrics.export_queue.set(row[0] if row else 0)

    def _claim(self) -> Claimed | None:
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE export_jobs SET status = 'failed', finished_at = now(),"
                " reason = format('the export stopped %%s times while running; not retried',"
                " attempts) WHERE status = 'running' AND attempts >= %s"
                " AND heartbeat_at < now() - make_interval(secs => %s)",
                (MAX_ATTEMPTS, STALE_AFTER_S),
            )
            row = conn.execute(
                "UPDATE export_jobs SET status = 'running', attempts = attempts + 1,"
                " started_at = now(), heartbeat_at = now() WHERE job_id = ("
                "  SELECT job_id FROM export_jobs WHERE status = 'queued'"
                "   OR (status = 'running' AND heartbeat_at < now() - make_interval(secs => %s))"
                "  ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)"
                " RETURNING job_id, filetype, query, attempts",
                (STALE_AFTER_S,),
            ).fetchone()
        if row is None:
            return None
        return Claimed(row[0], FileType(row[1]), EventQuery.from_json(row[2]), row[3])

    def _write(self, claimed: Claimed, path: Path) -> int:
        self.export_dir.mkdir(parents=True, exist_ok=True)
        statement, params = export_copy_sql(claimed.query, limit=self.max_rows + 1)
        with self.pool.connection() as conn, conn.cursor() as cursor:
            with cursor.copy(statement, params) as copy:
                WRITERS[claimed.filetype](self._beating(claimed, copy), path)
            rows = cursor.rowcount
        if rows > self.max_rows:
            raise ExportTooLargeError(
                f"more than {self.max_rows} events match; narrow the dates or tokens "
                "(limit: STREAM_EXPORT_MAX_ROWS)"
            )
        return rows

    def _beating(self, claimed: Claimed, chunks: Iterable[Any]) -> Iterator[bytes]:
        """COPY's chunks (one per row) in blocks of about 1 MiB, with a heartbeat on the job
        every HEARTBEAT_S while they flow."""
        next_beat = time.monotonic() + HEARTBEAT_S
        block = bytearray()
        for chunk in chunks:
            block += chunk
            if len(block) >= _BLOCK_BYTES:
                yield bytes(block)
                block.clear()
                if time.monotonic() >= next_beat:
                    self._heartbeat(claimed)
                    next_beat = time.monotonic() + HEARTBEAT_S
        if block:
            yield bytes(block)

    def _heartbeat(self, claimed: Claimed) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE export_jobs SET heartbeat_at = now() WHERE job_id = %s AND attempts = %s",
                (claimed.job_id, claimed.attempt),
            )

    def _finish(
        self,
        claimed: Claimed,
        status: BatchStatus,
        *,
        reason: str | None = None,
        rows: int | None = None,
        size: int | None = None,
        sha256: str | None = None,
    ) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE export_jobs SET status = %s, reason = %s, row_count = %s,"
                " size_bytes = %s, sha256 = %s, finished_at = now()"
                " WHERE job_id = %s AND attempts = %s AND status = 'running'",
                (status.value, reason, rows, size, sha256, claimed.job_id, claimed.attempt),
            )
        if self.metrics is not None:
            self.metrics.export_jobs.labels(status.value).inc()


def _size_and_sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
