-- The alert channels' durable outbox (callguard.floor.dispatch): one row per alert, state (firing or
-- resolved) and channel that a rule selects, written in the transaction that stores the alert, so an
-- alert stored is an alert that will be sent, across restarts of the floor. The row carries the alert as
-- sent (`alert`), so sending needs no other table.

CREATE TABLE deliveries (
    id bigserial PRIMARY KEY,
    alert_id text NOT NULL,
    alert_state text NOT NULL CHECK (alert_state IN ('firing', 'resolved')),
    channel text NOT NULL,
    alert jsonb NOT NULL,
    -- pending: to send (again) at next_attempt_at; sent; failed: given up, see last_error
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    -- an alert enqueued twice (a resent batch) is delivered once
    UNIQUE (alert_id, alert_state, channel)
);
CREATE INDEX deliveries_due ON deliveries (channel, next_attempt_at) WHERE state = 'pending';
