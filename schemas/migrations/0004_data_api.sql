-- The data API of seed 000: on-demand pages and batch-export jobs.

-- Newest-first pages over every event (no entity filter) and the export order.
CREATE INDEX charging_events_start ON charging_events (charge_start_time DESC, transaction_id DESC);

-- A batch request: the query it was validated into, its progress and its file. A job whose
-- worker stopped (no heartbeat) is taken up again by any streamer.
CREATE TABLE export_jobs (
    job_id           text        PRIMARY KEY,
    subscription_id  text        NOT NULL REFERENCES subscriptions ON DELETE CASCADE,
    filetype         text        NOT NULL CHECK (filetype IN ('csv', 'json', 'parquet', 'orc')),
    tokens           jsonb       NOT NULL,
    is_ohs_request   boolean     NOT NULL,
    query            jsonb       NOT NULL,
    correlation_id   text,
    status           text        NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'done', 'failed')),
    reason           text,
    attempts         integer     NOT NULL DEFAULT 0,
    row_count        bigint,
    size_bytes       bigint,
    sha256           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    heartbeat_at     timestamptz,
    finished_at      timestamptz
);
CREATE INDEX export_jobs_by_subscription ON export_jobs (subscription_id, created_at DESC);
CREATE INDEX export_jobs_unfinished ON export_jobs (created_at) WHERE status IN ('queued', 'running');

-- Delivered outbox rows are swept after STREAM_OUTBOX_KEEP_DAYS (the replay horizon).
CREATE INDEX outbox_delivered ON outbox (delivered_at) WHERE delivered_at IS NOT NULL;
