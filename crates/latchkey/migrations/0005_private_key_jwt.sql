-- private_key_jwt client authentication (RFC 7523): the client's public keys,
-- and the assertion ids already seen (replay protection until they expire).
ALTER TABLE clients ADD COLUMN jwks TEXT;

CREATE TABLE client_assertion_jtis (
    client_id  TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
