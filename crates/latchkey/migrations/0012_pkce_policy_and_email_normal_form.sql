-- Issue #12 (items 8 and 15).

-- Per-client PKCE policy: 1 (the default) = every authorization request needs
-- PKCE S256; 0 = a confidential client may go without it in an OpenID Connect
-- request that carries a nonce (RFC 9700 §2.1.1). `oauth::clients` refuses 0
-- for public clients. A code issued without PKCE stores '' in
-- authorization_codes.code_challenge.
ALTER TABLE clients ADD COLUMN require_pkce BIGINT NOT NULL DEFAULT 1;

-- Data steps SQL cannot do, run once by the binary right after the schema
-- migrations (`identity::email::normalize_stored`), in one transaction that
-- also deletes the row naming the step.
CREATE TABLE pending_data_migrations (
    name TEXT PRIMARY KEY
);
-- Emails are stored in their normal form (NFKC, then case folding) from now
-- on; rows stored before (trimmed and lower-cased only) are rewritten.
INSERT INTO pending_data_migrations (name) VALUES ('normalize_user_emails');
