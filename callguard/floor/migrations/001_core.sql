-- The floor's core schema: who may talk to it (workstations, supervisors), what they sent (events),
-- and what is folded from it (calls, alerts, notices). Times are timestamptz, stored in UTC.

CREATE TABLE teams (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE workstations (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
    team_id bigint NOT NULL REFERENCES teams (id),
    -- only the SHA-256 of the credential: a copy of the database does not let anyone post events
    credential_sha256 bytea NOT NULL UNIQUE CHECK (length(credential_sha256) = 32),
    enrolled_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    last_seen timestamptz
);

CREATE TABLE users (
    id bigserial PRIMARY KEY,
    login text NOT NULL UNIQUE CHECK (length(login) BETWEEN 1 AND 64),
    display_name text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 128),
    role text NOT NULL CHECK (role IN ('supervisor', 'admin')),
    -- an admin sees every team; a supervisor only theirs, so a supervisor must have one
    team_id bigint REFERENCES teams (id),
    password_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (role = 'admin' OR team_id IS NOT NULL)
);

CREATE TABLE sessions (
    -- the SHA-256 of the cookie's token, for the same reason as workstations' credentials
    token_sha256 bytea PRIMARY KEY CHECK (length(token_sha256) = 32),
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE events (
    id bigserial PRIMARY KEY,
    workstation_id bigint NOT NULL REFERENCES workstations (id),
    seq bigint NOT NULL CHECK (seq >= 1),
    call_id text NOT NULL CHECK (length(call_id) BETWEEN 1 AND 128),
    kind text NOT NULL,
    at timestamptz NOT NULL,
    t double precision NOT NULL,
    data jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    -- the outbox's id: a resent event is a no-op (ON CONFLICT DO NOTHING)
    UNIQUE (workstation_id, seq)
);
CREATE INDEX events_call ON events (workstation_id, call_id, seq);
CREATE INDEX events_kind_at ON events (kind, at);

-- One row per call, rebuilt from the call's events in seq order whenever some arrive (they may arrive
-- out of order: threat alerts and help requests are sent first).
CREATE TABLE calls (
    id bigserial PRIMARY KEY,
    workstation_id bigint NOT NULL REFERENCES workstations (id),
    call_id text NOT NULL,
    team_id bigint NOT NULL REFERENCES teams (id),
    agent text,
    queue text,
    language text,
    level text NOT NULL DEFAULT 'calm',
    level_reached text NOT NULL DEFAULT 'calm',
    started_at timestamptz NOT NULL,
    ended_at timestamptz,
    duration double precision,
    abuse_count integer NOT NULL DEFAULT 0,
    threat_count integer NOT NULL DEFAULT 0,
    transferred boolean NOT NULL DEFAULT false,
    released boolean NOT NULL DEFAULT false,
    last_seq bigint NOT NULL,
    last_event_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workstation_id, call_id)
);
CREATE INDEX calls_live ON calls (team_id) WHERE ended_at IS NULL;

-- Threat alerts and help requests: what a supervisor must see and answer.
CREATE TABLE alerts (
    id bigserial PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('threat', 'help')),
    event_id bigint NOT NULL UNIQUE REFERENCES events (id),
    workstation_id bigint NOT NULL REFERENCES workstations (id),
    seq bigint NOT NULL,
    call_id text NOT NULL,
    team_id bigint NOT NULL REFERENCES teams (id),
    at timestamptz NOT NULL,
    title text,
    message text,
    words jsonb NOT NULL DEFAULT '[]',
    created_at timestamptz NOT NULL DEFAULT now(),
    acknowledged_by bigint REFERENCES users (id),
    acknowledged_at timestamptz,
    CHECK ((acknowledged_by IS NULL) = (acknowledged_at IS NULL))
);
CREATE INDEX alerts_open ON alerts (team_id, created_at) WHERE acknowledged_at IS NULL;

-- What the floor tells a workstation (long poll): an alert acknowledged, a supervisor on the way.
CREATE TABLE notices (
    id bigserial PRIMARY KEY,
    workstation_id bigint NOT NULL REFERENCES workstations (id),
    alert_id bigint NOT NULL REFERENCES alerts (id),
    call_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('acknowledged', 'on_my_way')),
    seq bigint NOT NULL,
    by_name text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notices_workstation ON notices (workstation_id, id);
