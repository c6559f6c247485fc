-- Tables that are not time series: the meter registry, dead letters and the outbox.

CREATE TABLE meter_registry (
    meter_id          text        NOT NULL,
    valid_from        timestamptz NOT NULL,
    valid_to          timestamptz,
    meter_number      text,
    esn               text,
    service_point_id  text,
    premise_id        text,
    transformer_id    text,
    feeder_id         text,
    source            text,
    loaded_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, valid_from),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);

-- Messages that failed validation, with the raw bytes, so nothing is ever lost.
CREATE TABLE dead_letters (
    id            bigserial   PRIMARY KEY,
    received_at   timestamptz NOT NULL,
    topic         text        NOT NULL,
    payload       bytea       NOT NULL,
    reason        text        NOT NULL,
    replay_count  integer     NOT NULL DEFAULT 0,
    resolved_at   timestamptz
);
CREATE INDEX dead_letters_unresolved ON dead_letters (id) WHERE resolved_at IS NULL;

-- Seed-001 start and end messages, written in the same transaction as the event they
-- describe; the streamer delivers them. One start and one end per session, never more.
CREATE TABLE outbox (
    id                 bigserial   PRIMARY KEY,
    created_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    transaction_id     text        NOT NULL,
    asset_id           text        NOT NULL,
    kind               text        NOT NULL CHECK (kind IN ('start', 'end')),
    charge_start_time  timestamptz NOT NULL,
    payload            jsonb       NOT NULL,
    UNIQUE (transaction_id, kind)
);
