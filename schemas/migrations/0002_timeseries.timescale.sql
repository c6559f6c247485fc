-- TimescaleDB: hypertables, compression of old chunks, 13-month retention and a continuous
-- aggregate of EV activity per transformer per 15 minutes (real-time: recent buckets are
-- computed on read, so results match the plain-PostgreSQL view).

SELECT create_hypertable('measurements', by_range('ts', interval '7 days'));
SELECT create_hypertable('transaction_log', by_range('ts', interval '30 days'));
SELECT create_hypertable('charging_events', by_range('charge_start_time', interval '30 days'));

ALTER TABLE measurements SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'asset_id',
    timescaledb.compress_orderby = 'ts DESC'
);
ALTER TABLE transaction_log SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'asset_id',
    timescaledb.compress_orderby = 'ts DESC'
);
SELECT add_compression_policy('measurements', interval '30 days');
SELECT add_compression_policy('transaction_log', interval '60 days');

SELECT add_retention_policy('measurements', interval '13 months');
SELECT add_retention_policy('transaction_log', interval '13 months');
SELECT add_retention_policy('charging_events', interval '13 months');

-- Same name and signature as the plain-PostgreSQL functions, so callers need not care.
CREATE FUNCTION ev_ensure_partitions(first_month timestamptz, months integer)
RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$;

CREATE FUNCTION ev_apply_retention(keep interval DEFAULT interval '13 months')
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    dropped integer := 0;
BEGIN
    dropped := dropped + (SELECT count(*) FROM drop_chunks('measurements', now() - keep));
    dropped := dropped + (SELECT count(*) FROM drop_chunks('transaction_log', now() - keep));
    dropped := dropped + (SELECT count(*) FROM drop_chunks('charging_events', now() - keep));
    RETURN dropped;
END $$;

CREATE MATERIALIZED VIEW ev_transformer_15m WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(interval '15 minutes', ts) AS bucket,
       transformer_id,
       count(*) FILTER (WHERE state = 'Started')                AS sessions_started,
       count(*) FILTER (WHERE state = 'Ended')                  AS sessions_ended,
       sum(ev_energy_wh) FILTER (WHERE state = 'Ended')         AS ended_energy_wh,
       max(greatest(ev_peak_power_w, ev_power_w))               AS peak_ev_power_w
FROM transaction_log
GROUP BY 1, 2
WITH NO DATA;

SELECT add_continuous_aggregate_policy('ev_transformer_15m',
    start_offset => interval '3 days',
    end_offset => interval '15 minutes',
    schedule_interval => interval '15 minutes');
