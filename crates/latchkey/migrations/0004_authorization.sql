-- Authorization code flow, consent and device authorization.

-- A validated authorization request waiting for sign-in and/or consent
-- (explicit, expiring state: the browser carries only its id).
CREATE TABLE authorization_requests (
    id          TEXT PRIMARY KEY,       -- 256-bit random, SHA-256 not needed: it is no credential
    client_id   TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    params      TEXT NOT NULL,          -- JSON of the validated request
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE authorization_codes (
    hash            TEXT PRIMARY KEY,   -- SHA-256 of the 256-bit code
    client_id       TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_handle  TEXT NOT NULL,
    redirect_uri    TEXT NOT NULL,
    scope           TEXT NOT NULL,
    nonce           TEXT,
    code_challenge  TEXT NOT NULL,
    auth_time       BIGINT NOT NULL,
    amr             TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    used_at         BIGINT,
    issued_family   TEXT,               -- refresh family issued from this code
    issued_jti      TEXT,               -- access token issued from this code
    issued_exp      BIGINT
);

-- What a user allowed a client (per user and client, reviewable, revocable).
CREATE TABLE consents (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    scope      TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

-- RFC 8628 device authorization.
CREATE TABLE device_authorizations (
    device_code_hash TEXT PRIMARY KEY,
    user_code        TEXT NOT NULL UNIQUE,   -- normalized, no dash
    client_id        TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    scope            TEXT NOT NULL,
    status           TEXT NOT NULL,          -- pending | approved | denied | used
    user_id          TEXT,
    session_handle   TEXT,
    auth_time        BIGINT,
    amr              TEXT,
    interval_secs    BIGINT NOT NULL,
    last_polled_at   BIGINT,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL
);
