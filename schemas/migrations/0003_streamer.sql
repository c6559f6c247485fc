-- Subscribers, their subscriptions, and the outbox delivery state the streamer keeps.

-- A data subscriber (seed 000's DataSubscriberId). Its API token and broker password are
-- stored only as hashes; the broker hash is in Mosquitto's own password-file format.
CREATE TABLE subscribers (
    subscriber_id         text        PRIMARY KEY,
    api_token_hash        text        NOT NULL,
    broker_password_hash  text        NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now()
);

-- A live subscription (seed 001): a filter and the topic its events go to. Live delivery gives
-- it the outbox rows after start_after (the outbox position when it was created); a start
-- position asked for at creation is replayed from the kept outbox: rows in
-- (replay_after, replay_until], replay_after advancing as the replay is acknowledged.
CREATE TABLE subscriptions (
    subscription_id  text        PRIMARY KEY,
    subscriber_id    text        NOT NULL REFERENCES subscribers ON DELETE CASCADE,
    entity_type      text        NOT NULL
        CHECK (entity_type IN ('ServicePoint', 'Meter', 'ESN', 'Transformer', 'Premises', 'None')),
    entity_ids       text[]      NOT NULL DEFAULT '{}',
    state            text        NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused')),
    start_after      bigint      NOT NULL,
    replay_after     bigint      NOT NULL DEFAULT 0,
    replay_until     bigint      NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((entity_type = 'None') = (cardinality(entity_ids) = 0))
);
CREATE INDEX subscriptions_by_subscriber ON subscriptions (subscriber_id);

-- A row is pending until a streamer has published it to every matching subscription and the
-- broker acknowledged each publish; only then is delivered_at set.
ALTER TABLE outbox ADD COLUMN delivered_at timestamptz;
CREATE INDEX outbox_pending ON outbox (id) WHERE delivered_at IS NULL;

-- Wake the streamers instead of having them poll: one notification per writing statement.
CREATE FUNCTION ev_notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ev_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION ev_notify_outbox();
