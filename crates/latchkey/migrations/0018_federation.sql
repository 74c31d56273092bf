-- Federation (social login): upstream OpenID Connect providers added at run
-- time (`latchkey idp add`; providers of the configuration file are not
-- stored), the identities they assert, keyed by (provider, subject) and never
-- by email, and the short-lived state of a sign-in at an upstream.

CREATE TABLE federation_providers (
    name                 TEXT PRIMARY KEY,
    kind                 TEXT NOT NULL,           -- 'oidc'
    issuer               TEXT NOT NULL,
    client_id            TEXT NOT NULL,
    client_secret_sealed TEXT NOT NULL,           -- sealed with a key derived from the master key
    auth_method          TEXT NOT NULL,           -- client_secret_basic | client_secret_post
    scopes               TEXT NOT NULL,           -- space-separated, beyond `openid`
    link_policy          TEXT NOT NULL,           -- verified | confirm | never
    provision            BIGINT NOT NULL DEFAULT 0,
    role_claim           TEXT NOT NULL DEFAULT '',
    role_map             TEXT NOT NULL DEFAULT '', -- JSON object: upstream value -> local role
    enabled              BIGINT NOT NULL DEFAULT 1,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);

-- One row per (provider, subject): the subject is the upstream's `sub`,
-- stable across email changes. A user may hold several.
CREATE TABLE federated_identities (
    id            TEXT PRIMARY KEY,
    provider      TEXT NOT NULL,
    subject       TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email_at_link TEXT NOT NULL DEFAULT '',
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX federated_identities_subject ON federated_identities (provider, subject);
CREATE INDEX federated_identities_user ON federated_identities (user_id);

-- A sign-in sent to an upstream and not yet back. `state` is 256 random bits
-- kept in a browser cookie and sent to the upstream; only its SHA-256 is
-- stored. Consumed by a conditional DELETE (single use).
CREATE TABLE federation_states (
    state_hash     TEXT PRIMARY KEY,
    provider       TEXT NOT NULL,
    nonce          TEXT NOT NULL,
    pkce_verifier  TEXT NOT NULL,                 -- sealed
    next           TEXT NOT NULL,
    link_user_id   TEXT NOT NULL DEFAULT '',      -- set when a signed-in user links another identity
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL
);
CREATE INDEX federation_states_expires ON federation_states (expires_at);

-- A federated identity waiting for the owner of an existing account to sign
-- in (with every factor) and confirm the link. Only the SHA-256 of the
-- token kept in the browser's cookie is stored.
CREATE TABLE federation_pending_links (
    token_hash  TEXT PRIMARY KEY,
    provider    TEXT NOT NULL,
    subject     TEXT NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email       TEXT NOT NULL DEFAULT '',
    next        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX federation_pending_links_expires ON federation_pending_links (expires_at);
