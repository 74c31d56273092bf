-- OAuth clients and the tokens issued to them.

CREATE TABLE clients (
    id                          TEXT PRIMARY KEY,          -- client_id
    name                        TEXT NOT NULL,
    secret_hash                 TEXT,                      -- SHA-256 hex of a 256-bit secret; NULL = public client
    redirect_uris               TEXT NOT NULL DEFAULT '',  -- space-separated, matched exactly
    post_logout_redirect_uris   TEXT NOT NULL DEFAULT '',
    grant_types                 TEXT NOT NULL DEFAULT '',
    scopes                      TEXT NOT NULL DEFAULT '',  -- what the client may ask for
    audience                    TEXT NOT NULL DEFAULT '',  -- `aud` of its access tokens ('' = client_id)
    access_token_format         TEXT NOT NULL DEFAULT 'jwt', -- jwt | opaque
    access_token_lifetime_secs  BIGINT,                    -- NULL = deployment default
    signing_algorithm           TEXT,                      -- NULL = deployment default
    first_party                 BIGINT NOT NULL DEFAULT 0,
    backchannel_logout_uri      TEXT,
    created_at                  BIGINT NOT NULL,
    updated_at                  BIGINT NOT NULL
);

-- A refresh-token family: every token obtained by rotating one grant.
-- Reuse of a spent member revokes the family (and its session).
CREATE TABLE refresh_families (
    id              TEXT PRIMARY KEY,
    client_id       TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_handle  TEXT,            -- the sign-in session it came from
    scope           TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL, -- absolute lifetime end
    revoked_at      BIGINT,
    revoked_reason  TEXT
);
CREATE INDEX refresh_families_session ON refresh_families (session_handle);
CREATE INDEX refresh_families_user ON refresh_families (user_id);

-- Refresh tokens are 256-bit random values stored only as SHA-256.
CREATE TABLE refresh_tokens (
    hash            TEXT PRIMARY KEY,
    family_id       TEXT NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    scope           TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    idle_expires_at BIGINT NOT NULL,
    spent_at        BIGINT           -- set when rotated; a spent token presented again is reuse
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

-- Revoked JWT access tokens, kept until they would have expired anyway.
CREATE TABLE revoked_access_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

-- Opaque (reference) access tokens, stored only as SHA-256.
CREATE TABLE opaque_access_tokens (
    hash        TEXT PRIMARY KEY,
    jti         TEXT NOT NULL UNIQUE,
    client_id   TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    subject     TEXT NOT NULL,
    scope       TEXT NOT NULL,
    audience    TEXT NOT NULL,
    session_id  TEXT,
    family_id   TEXT,
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
