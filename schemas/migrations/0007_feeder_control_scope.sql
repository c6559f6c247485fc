-- A control scope may name feeders (a DERMS curtails a feeder's load as one): the sessions
-- whose meter was, as of the session's start, on one of these feeders. Feeder is not one of
-- seed 001's entity types, so subscriptions still cannot filter on it.
ALTER TABLE subscribers
    DROP CONSTRAINT subscribers_control_entity_type_check,
    ADD CONSTRAINT subscribers_control_entity_type_check
        CHECK (control_entity_type IN
               ('ServicePoint', 'Meter', 'ESN', 'Transformer', 'Premises', 'Feeder', 'None'));
