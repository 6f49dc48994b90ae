-- Ratatoskr session store, PostgreSQL, version 1.
-- Times are milliseconds since the Unix epoch (application clock).

-- One row per live (or not yet reaped) session, filed under SHA-256 of its token.
CREATE TABLE ratatoskr_sessions (
    session_key       BYTEA  NOT NULL PRIMARY KEY CHECK (octet_length(session_key) = 32),
    handle            TEXT   NOT NULL,           -- public handle, for admin lookup
    user_id           TEXT,                      -- NULL for anonymous sessions; the per-user index
    created_at        BIGINT NOT NULL,
    last_seen         BIGINT NOT NULL,
    idle_timeout      BIGINT NOT NULL,           -- so a touch computes the deadline from stored data
    absolute_deadline BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,           -- least(last_seen + idle_timeout, absolute_deadline)
    meta              BYTEA  NOT NULL            -- codec::encode_meta
);

CREATE INDEX ratatoskr_sessions_user ON ratatoskr_sessions (user_id, created_at)
    WHERE user_id IS NOT NULL;
CREATE INDEX ratatoskr_sessions_expires ON ratatoskr_sessions (expires_at);
CREATE INDEX ratatoskr_sessions_handle ON ratatoskr_sessions (handle);

-- One row per attribute, so a delta writes only what it changed.
CREATE TABLE ratatoskr_session_attrs (
    session_key BYTEA NOT NULL REFERENCES ratatoskr_sessions (session_key) ON DELETE CASCADE,
    name        TEXT  NOT NULL,
    value       BYTEA NOT NULL,
    PRIMARY KEY (session_key, name)
);

-- When each user's sessions were last revoked all at once; refuses creates that began earlier.
CREATE TABLE ratatoskr_user_revocations (
    user_id    TEXT   NOT NULL PRIMARY KEY,
    revoked_at BIGINT NOT NULL
);
