-- Time series. On plain PostgreSQL the /*@postgres ... @*/ clauses become native range
-- partitioning; with TimescaleDB they are dropped and 0002_timeseries.timescale.sql turns the
-- tables into hypertables. Columns, keys and indexes are the same on both.

CREATE TABLE measurements (
    asset_id              text             NOT NULL,
    ts                    timestamptz      NOT NULL,
    energy_wh             double precision NOT NULL,
    power_w               double precision NOT NULL,
    state_of_charge_pct   double precision,
    site_id               text             NOT NULL,
    received_at           timestamptz      NOT NULL,
    PRIMARY KEY (asset_id, ts)
) /*@postgres PARTITION BY RANGE (ts) @*/;

-- Append-only log of every transaction message; a redelivered copy (same bytes) is not
-- stored twice.
CREATE TABLE transaction_log (
    ts                timestamptz      NOT NULL,
    message_hash      bytea            NOT NULL,
    transaction_id    text             NOT NULL,
    asset_id          text             NOT NULL,
    site_id           text             NOT NULL,
    state             text             NOT NULL,
    sequence_number   integer,
    ev_power_w        double precision,
    ev_peak_power_w   double precision,
    ev_energy_wh      double precision,
    transformer_id    text,
    received_at       timestamptz      NOT NULL,
    payload           jsonb            NOT NULL,
    PRIMARY KEY (message_hash, ts)
) /*@postgres PARTITION BY RANGE (ts) @*/;
CREATE INDEX transaction_log_transaction ON transaction_log (transaction_id);

-- One row per session (the Itron charging event); time column = ChargeStartTime.
CREATE TABLE charging_events (
    transaction_id     text             NOT NULL,
    charge_start_time  timestamptz      NOT NULL,
    asset_id           text             NOT NULL,
    site_id            text             NOT NULL,
    status             text             NOT NULL CHECK (status IN ('open', 'closed', 'timed_out')),
    close_reason       text,
    charge_end_time    timestamptz,
    charge_w           double precision,
    start_power_w      double precision,
    charge_duration_h  double precision,
    charge_energy_wh   double precision,
    meter_energy_wh    double precision,
    received_time      timestamptz      NOT NULL,
    last_activity      timestamptz      NOT NULL,
    latest_ended       boolean          NOT NULL,
    latest_sequence    integer          NOT NULL,
    latest_ts          timestamptz      NOT NULL,
    detector_version   text,
    confidence         double precision,
    saw_started        boolean          NOT NULL,
    message_flags      text[]           NOT NULL DEFAULT '{}',
    flags              text[]           NOT NULL DEFAULT '{}',
    start_emitted      boolean          NOT NULL,
    end_emitted        boolean          NOT NULL,
    registry_matched   boolean          NOT NULL DEFAULT false,
    meter_id           text,
    meter_number       text,
    esn                text,
    service_point_id   text,
    premise_id         text,
    transformer_id     text,
    feeder_id          text,
    updated_at         timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (transaction_id, charge_start_time)
) /*@postgres PARTITION BY RANGE (charge_start_time) @*/;
CREATE INDEX charging_events_transaction ON charging_events (transaction_id);
CREATE INDEX charging_events_open ON charging_events (last_activity) WHERE status = 'open';
CREATE INDEX charging_events_unmatched ON charging_events (asset_id) WHERE NOT registry_matched;
CREATE INDEX charging_events_meter ON charging_events (meter_id, charge_start_time DESC);
CREATE INDEX charging_events_service_point
    ON charging_events (service_point_id, charge_start_time DESC);
CREATE INDEX charging_events_premise ON charging_events (premise_id, charge_start_time DESC);
CREATE INDEX charging_events_esn ON charging_events (esn, charge_start_time DESC);
CREATE INDEX charging_events_transformer
    ON charging_events (transformer_id, charge_start_time DESC);
CREATE INDEX charging_events_received ON charging_events (received_time DESC);
