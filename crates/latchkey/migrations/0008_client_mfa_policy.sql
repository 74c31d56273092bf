-- Per-client policy: users must have signed in with a second factor.
ALTER TABLE clients ADD COLUMN require_mfa BIGINT NOT NULL DEFAULT 0;
