-- The application's tables as the code before migrations created them, word for word, and with
-- IF NOT EXISTS: on a database that code created, this migration changes nothing and is only
-- recorded as applied.
CREATE TABLE IF NOT EXISTS app_users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_admin INTEGER NOT NULL DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS app_platforms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES app_users(id) ON DELETE CASCADE,
    platform_type TEXT NOT NULL,
    name TEXT NOT NULL,
    instance_url TEXT NOT NULL,
    username TEXT NOT NULL,
    token_sealed BLOB NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    UNIQUE (user_id, platform_type, instance_url, username)
);
CREATE TABLE IF NOT EXISTS app_login_throttle (
    username TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    locked_until INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS app_session_samples (
    at INTEGER PRIMARY KEY,
    active INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS app_login_counts (
    hour INTEGER NOT NULL,
    result TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (hour, result)
);
CREATE TABLE IF NOT EXISTS app_audit_counts (
    hour INTEGER NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (hour, kind, reason)
);
