-- Plain PostgreSQL: monthly range partitions, a default partition for anything outside
-- them, and the project's own 13-month retention (ev_apply_retention).

CREATE TABLE measurements_default PARTITION OF measurements DEFAULT;
CREATE TABLE transaction_log_default PARTITION OF transaction_log DEFAULT;
CREATE TABLE charging_events_default PARTITION OF charging_events DEFAULT;

-- Creates the monthly partitions covering [first_month, first_month + months); rows already
-- in the default partition for such a month are moved into the new partition.
CREATE FUNCTION ev_ensure_partitions(first_month timestamptz, months integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    parent text;
    lo timestamptz;
    hi timestamptz;
    part text;
    created integer := 0;
    key text;
BEGIN
    FOREACH parent IN ARRAY ARRAY['measurements', 'transaction_log', 'charging_events'] LOOP
        key := CASE parent WHEN 'charging_events' THEN 'charge_start_time' ELSE 'ts' END;
        FOR i IN 0 .. months - 1 LOOP
            lo := date_trunc('month', first_month AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                  + make_interval(months => i);
            hi := lo + interval '1 month';
            part := format('%s_p%s', parent, to_char(lo AT TIME ZONE 'UTC', 'YYYYMM'));
            CONTINUE WHEN to_regclass(part) IS NOT NULL;
            EXECUTE format('CREATE TEMP TABLE ev_moving (LIKE %I)', parent);
            EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= $1 AND %I < $2 '
                           'RETURNING *) INSERT INTO ev_moving SELECT * FROM moved',
                           parent || '_default', key, key) USING lo, hi;
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                           part, parent, lo, hi);
            EXECUTE format('INSERT INTO %I SELECT * FROM ev_moving', parent);
            DROP TABLE ev_moving;
            created := created + 1;
        END LOOP;
    END LOOP;
    RETURN created;
END $$;

-- Drops whole partitions older than keep and deletes old rows from the default partitions.
CREATE FUNCTION ev_apply_retention(keep interval DEFAULT interval '13 months')
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    cutoff timestamptz := now() - keep;
    r record;
    dropped integer := 0;
BEGIN
    FOR r IN
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname IN ('measurements', 'transaction_log', 'charging_events')
          AND c.relname ~ '_p[0-9]{6}$'
    LOOP
        IF (regexp_match(r.bound, 'TO \(''([^'']+)''\)'))[1]::timestamptz <= cutoff THEN
            EXECUTE format('DROP TABLE %I', r.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    DELETE FROM measurements_default WHERE ts < cutoff;
    DELETE FROM transaction_log_default WHERE ts < cutoff;
    DELETE FROM charging_events_default WHERE charge_start_time < cutoff;
    RETURN dropped;
END $$;

SELECT ev_ensure_partitions(now() - interval '13 months', 16);

-- Planners' EV activity per transformer per 15 minutes (a plain view here; a continuous
-- aggregate with TimescaleDB). Same columns and results on both.
CREATE VIEW ev_transformer_15m AS
SELECT date_bin(interval '15 minutes', ts, timestamptz '2000-01-01 00:00:00+00') AS bucket,
       transformer_id,
       count(*) FILTER (WHERE state = 'Started')                AS sessions_started,
       count(*) FILTER (WHERE state = 'Ended')                  AS sessions_ended,
       sum(ev_energy_wh) FILTER (WHERE state = 'Ended')         AS ended_energy_wh,
       max(greatest(ev_peak_power_w, ev_power_w))               AS peak_ev_power_w
FROM transaction_log
GROUP BY 1, 2;
