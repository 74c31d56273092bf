-- Passkeys (WebAuthn credentials) and the state of WebAuthn ceremonies in flight.
-- Portable SQL: TEXT and BIGINT only, flags as BIGINT 0/1.

-- One row per registered credential. `credential` is the webauthn-rs
-- `Passkey` as JSON: public key, algorithm, signature counter, backup flags.
-- It holds no secret (the private key never leaves the authenticator).
CREATE TABLE passkeys (
    id              TEXT PRIMARY KEY,       -- UUID v7: the handle pages and URLs use
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id   TEXT NOT NULL,          -- base64url of the WebAuthn credential id
    name            TEXT NOT NULL,
    credential      TEXT NOT NULL,          -- JSON (webauthn-rs Passkey)
    backup_eligible BIGINT NOT NULL DEFAULT 0,  -- 1: may be synced (e.g. a platform keychain)
    backed_up       BIGINT NOT NULL DEFAULT 0,  -- 1: currently synced ("synced"), 0: "device-bound"
    created_at      BIGINT NOT NULL,
    last_used_at    BIGINT
);
-- A credential belongs to one account only (WebAuthn §7.1 step 22).
CREATE UNIQUE INDEX passkeys_credential_id ON passkeys (credential_id);
CREATE INDEX passkeys_user ON passkeys (user_id);

-- A started registration or authentication, waiting for the browser's answer.
-- Single use (deleted when finished), bound to the browser that started it,
-- expiring. The browser holds only the ceremony id; its SHA-256 is the key.
CREATE TABLE webauthn_challenges (
    id_hash    TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,               -- registration | authentication | second_factor
    state      TEXT NOT NULL,               -- JSON of the webauthn-rs ceremony state (holds the challenge)
    user_id    TEXT REFERENCES users (id) ON DELETE CASCADE,  -- NULL for usernameless sign-in
    binding    TEXT NOT NULL,               -- SHA-256 of the anonymous CSRF cookie, or the session id hash
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX webauthn_challenges_binding ON webauthn_challenges (binding);
CREATE INDEX webauthn_challenges_expires ON webauthn_challenges (expires_at);
