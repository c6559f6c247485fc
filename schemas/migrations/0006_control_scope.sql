-- Which sessions a subscriber may limit (seed 003): those whose meter was, as of the session's
-- start, in its control scope. Subscribers choose their own subscriptions through the API, so
-- seeing an entity grants nothing; only the operator grants control
-- (`python -m streamer subscribers scope`). NULL: no session; 'None': every session (the
-- utility's own DERMS); otherwise the sessions on these ids of that entity type.
ALTER TABLE subscribers
    ADD COLUMN control_entity_type text
        CHECK (control_entity_type IN
               ('ServicePoint', 'Meter', 'ESN', 'Transformer', 'Premises', 'None')),
    ADD COLUMN control_entity_ids text[] NOT NULL DEFAULT '{}',
    ADD CHECK ((control_entity_type IS NULL OR control_entity_type = 'None')
               = (cardinality(control_entity_ids) = 0));

-- Subscribers from before scopes existed could limit any session: they keep that, and the
-- operator narrows it. A subscriber issued from now on limits nothing until granted.
UPDATE subscribers SET control_entity_type = 'None';
