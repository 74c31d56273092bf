-- Refresh-token reuse grace (tokens.refresh_token_reuse_grace_secs).
-- A rotated token names the successor it was answered with; a retry of the
-- just-spent token within the grace replaces that successor, if unused, with
-- a fresh one, and marks the replaced one superseded (presenting it later is
-- reuse). Tokens rotated before this migration name no successor and get no
-- grace.
ALTER TABLE refresh_tokens ADD COLUMN successor_hash TEXT;
ALTER TABLE refresh_tokens ADD COLUMN superseded_at BIGINT;
