-- Multi-factor authentication: TOTP (secret sealed with the master key),
-- recovery codes (SHA-256 only), and the half-done sign-in waiting for its
-- second factor (no session exists until it completes).
CREATE TABLE totp_credentials (
    user_id        TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    sealed_secret  TEXT NOT NULL,
    confirmed      BIGINT NOT NULL DEFAULT 0,  -- enabled only after a valid code
    last_used_step BIGINT,                     -- replay protection: steps ≤ this are refused
    created_at     BIGINT NOT NULL
);

CREATE TABLE recovery_codes (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE mfa_challenges (
    id_hash    TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    first_amr  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
