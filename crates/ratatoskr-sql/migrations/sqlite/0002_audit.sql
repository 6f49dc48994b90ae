-- Ratatoskr audit trail, SQLite, version 2.
CREATE TABLE ratatoskr_audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    handle  TEXT,
    user_id TEXT,
    detail  TEXT
) STRICT;

CREATE INDEX ratatoskr_audit_at ON ratatoskr_audit (at);
CREATE INDEX ratatoskr_audit_user ON ratatoskr_audit (user_id, at) WHERE user_id IS NOT NULL;
