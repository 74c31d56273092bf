-- Issue #12 (review fixes): what a sign-in proved travels with what it
-- produced, the order of a sign-in and an authorization request is exact,
-- and a replayed authorization code is marked so its first use can revoke
-- what it issues even when the replay commits first. Every column is
-- nullable: rows written by older versions read as "unknown" (see each use).

-- The sign-in time to the millisecond (`auth_time` stays in seconds, as the
-- ID token carries it). NULL: `auth_time * 1000`.
ALTER TABLE sessions ADD COLUMN auth_time_ms BIGINT;

-- When the request arrived, to the millisecond, and the session the browser
-- held then (NULL: none). A sign-in after the request satisfies
-- prompt=login / max_age (policy::signed_in_after).
ALTER TABLE authorization_requests ADD COLUMN created_at_ms BIGINT;
ALTER TABLE authorization_requests ADD COLUMN seen_session TEXT;

-- Set by the first replay of a used code. The first use records what it
-- issued only with `RETURNING replayed_at`, and revokes it itself when set.
ALTER TABLE authorization_codes ADD COLUMN replayed_at BIGINT;

-- The sign-in behind a refresh family, for the access tokens refreshed from
-- it (acr/amr/auth_time, and roles that need a second factor). NULL amr:
-- treated as a sign-in without a second factor.
ALTER TABLE refresh_families ADD COLUMN auth_time BIGINT;
ALTER TABLE refresh_families ADD COLUMN amr TEXT;

-- The same for opaque access tokens, reported by introspection.
ALTER TABLE opaque_access_tokens ADD COLUMN auth_time BIGINT;
ALTER TABLE opaque_access_tokens ADD COLUMN amr TEXT;
