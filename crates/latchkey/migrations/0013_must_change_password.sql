-- An account whose password was given to its holder by someone else (the
-- administrator `latchkey dev` creates and prints) must choose its own at the
-- first sign-in: 1 until the holder sets a new password or adds a passkey.
ALTER TABLE users ADD COLUMN must_change_password BIGINT NOT NULL DEFAULT 0;
