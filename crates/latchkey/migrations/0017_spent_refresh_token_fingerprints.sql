-- Spent refresh tokens are pruned once past the reuse grace
-- (tokens::refresh::prune_spent); what reuse detection needs of each is kept
-- here: 64 bits of its hash and its family. Presenting a pruned token still
-- revokes the family. No foreign key: rows of families that are gone are
-- deleted by the same pruning (one scan, not one per deleted family).
CREATE TABLE spent_refresh_tokens (
    fingerprint TEXT PRIMARY KEY,
    family_id   TEXT NOT NULL
);
