-- Ratatoskr outage journal, SQLite, version 3.
-- Fast-tier (Redis) invalidations still owed: written when Redis could not be told about a
-- durable change, replayed (and deleted) by whichever instance sees Redis answer again.
-- AUTOINCREMENT: ids are never reused, so acknowledging an old id can never delete a newer entry.
CREATE TABLE ratatoskr_redis_journal (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,                -- when it was written (ms since the epoch)
    kind        TEXT    NOT NULL,                -- 'session' or 'user'
    session_key BLOB,                            -- kind 'session': SHA-256 of the token
    user_id     TEXT,                            -- kind 'user': every session of this user
    CHECK (kind <> 'session' OR (session_key IS NOT NULL AND length(session_key) = 32)),
    CHECK (kind <> 'user' OR user_id IS NOT NULL)
) STRICT;
