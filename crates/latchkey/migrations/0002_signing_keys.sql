-- Signing keys: private keys sealed with the master key (XChaCha20-Poly1305),
-- public JWKs for the JWKS. One row per key; `generation` orders the keys of
-- one algorithm and its uniqueness makes concurrent rotation by several
-- instances safe (exactly one insert of the next generation wins).
CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,      -- RFC 7638 thumbprint
    alg            TEXT NOT NULL,
    generation     BIGINT NOT NULL,
    sealed_private TEXT NOT NULL,         -- base64url(nonce || ciphertext)
    public_jwk     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,       -- in the JWKS from here
    activates_at   BIGINT NOT NULL,       -- signs from here
    retired_at     BIGINT,                -- retired by an operator (NULL = not)
    UNIQUE (alg, generation)
);
