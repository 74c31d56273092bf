-- The algorithm of a client's ID tokens (`id_token_signed_response_alg`,
-- OpenID Connect Dynamic Client Registration §2). NULL means RS256, the
-- default OpenID Connect Core §15.1 requires of every provider; access tokens
-- keep `signing_algorithm`. Until now ID tokens were signed with the client's
-- `signing_algorithm`: a client that named one keeps it for its ID tokens.
ALTER TABLE clients ADD COLUMN id_token_signed_response_alg TEXT;
UPDATE clients SET id_token_signed_response_alg = signing_algorithm WHERE signing_algorithm IS NOT NULL;
