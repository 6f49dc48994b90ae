-- Ratatoskr outage journal, PostgreSQL, version 3.
-- Fast-tier (Redis) invalidations still owed: written when Redis could not be told about a
-- durable change, replayed (and deleted) by whichever instance sees Redis answer again.
-- Ids come from a sequence and are never reused.
CREATE TABLE ratatoskr_redis_journal (
    id          BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,                 -- when it was written (ms since the epoch)
    kind        TEXT   NOT NULL,                 -- 'session' or 'user'
    session_key BYTEA,                           -- kind 'session': SHA-256 of the token
    user_id     TEXT,                            -- kind 'user': every session of this user
    CHECK (kind <> 'session' OR (session_key IS NOT NULL AND octet_length(session_key) = 32)),
    CHECK (kind <> 'user' OR user_id IS NOT NULL)
);
