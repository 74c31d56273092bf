-- Foundation schema: users, roles, server-side sessions, audit log.
-- Written in SQL that SQLite and PostgreSQL both accept: TEXT ids (UUID v7),
-- BIGINT Unix-second timestamps, BIGINT 0/1 flags, no engine-specific functions.

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL,          -- normalized (trimmed, lower case)
    display_name   TEXT NOT NULL DEFAULT '',
    password_hash  TEXT,                   -- PHC string (Argon2id) or imported bcrypt; NULL = no password
    disabled       BIGINT NOT NULL DEFAULT 0,  -- 0 or 1 (portable: sqlx Any cannot read SQLite BOOLEAN)
    email_verified BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE UNIQUE INDEX users_email_unique ON users (email);

CREATE TABLE user_roles (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role    TEXT NOT NULL,
    PRIMARY KEY (user_id, role)
);

-- A session id is 256 random bits; only its SHA-256 is stored (id_hash).
-- `handle` is a separate public identifier used to list and revoke sessions.
CREATE TABLE sessions (
    id_hash      TEXT PRIMARY KEY,
    handle       TEXT NOT NULL UNIQUE,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,          -- absolute lifetime end
    auth_time    BIGINT NOT NULL,
    amr          TEXT NOT NULL,            -- space-separated RFC 8176 values
    ip           TEXT NOT NULL DEFAULT '',
    user_agent   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- Append-only: nothing in Latchkey updates or deletes rows here.
CREATE TABLE audit_events (
    id         TEXT PRIMARY KEY,           -- UUID v7, time-ordered
    at         BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    actor      TEXT NOT NULL DEFAULT '',   -- user id, 'cli' or '' (anonymous)
    subject    TEXT NOT NULL DEFAULT '',   -- the user (id or attempted email) affected
    ip         TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT '',
    detail     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_events_at ON audit_events (at);
