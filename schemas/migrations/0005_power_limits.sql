-- Session power management (seed 003): power-limit actions, their history, and the signed
-- webhooks their status events go to.

-- An action asked of one ongoing session. The command travels to the session's edge agent
-- (sent_at set once the broker acknowledged it); the agent's verified answer, or a timeout,
-- settles it. status only moves requested -> completed | failed.
CREATE TABLE power_actions (
    action_id       text        PRIMARY KEY,
    subscriber_id   text        NOT NULL REFERENCES subscribers ON DELETE CASCADE,
    transaction_id  text        NOT NULL,
    site_id         text        NOT NULL,
    asset_id        text        NOT NULL,
    type            text        NOT NULL
        CHECK (type IN ('session.set_power_limit', 'session.clear_power_limit')),
    status          text        NOT NULL DEFAULT 'requested'
        CHECK (status IN ('requested', 'completed', 'failed')),
    data            jsonb       NOT NULL DEFAULT '{}',
    reason          text,
    measured_ev_power_w double precision,
    expires_at      timestamptz NOT NULL,
    sent_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX power_actions_unsent ON power_actions (created_at)
    WHERE sent_at IS NULL AND status = 'requested';
CREATE INDEX power_actions_open ON power_actions (created_at) WHERE status = 'requested';
CREATE INDEX power_actions_session ON power_actions (transaction_id, created_at);

-- Every status an action went through, in order; also the source of its status events.
CREATE TABLE power_action_events (
    event_id     bigserial   PRIMARY KEY,
    action_id    text        NOT NULL REFERENCES power_actions ON DELETE CASCADE,
    status       text        NOT NULL CHECK (status IN ('requested', 'completed', 'failed')),
    reason       text,
    body         jsonb       NOT NULL,
    published_at timestamptz,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (action_id, status)
);
CREATE INDEX power_action_events_unpublished ON power_action_events (event_id)
    WHERE published_at IS NULL;

-- A subscriber's webhook endpoint; its secret signs every body (HMAC-SHA256).
CREATE TABLE webhooks (
    webhook_id     text        PRIMARY KEY,
    subscriber_id  text        NOT NULL REFERENCES subscribers ON DELETE CASCADE,
    url            text        NOT NULL,
    secret         text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_by_subscriber ON webhooks (subscriber_id);

-- One status event to one webhook. Within a session, a webhook gets its events in order: a
-- delivery waits while an earlier one of the same session and webhook is not delivered.
CREATE TABLE webhook_deliveries (
    webhook_id      text        NOT NULL REFERENCES webhooks ON DELETE CASCADE,
    event_id        bigint      NOT NULL REFERENCES power_action_events ON DELETE CASCADE,
    transaction_id  text        NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_error      text,
    delivered_at    timestamptz,
    gave_up_at      timestamptz,
    PRIMARY KEY (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;
