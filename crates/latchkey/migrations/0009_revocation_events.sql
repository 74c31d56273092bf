-- The revocation feed (issue #5): every revocation that makes access tokens
-- invalid before they expire, in commit order, for APIs to follow.
--
-- `seq` comes from the one-row counter `revocation_feed_head`, incremented
-- in the same transaction as the revocation it reports. Its row lock
-- serializes writers until commit, so seq order is commit order and seqs
-- have no gaps: a reader that has seen seq N can never later find a
-- committed N-1 (see src/revocation/mod.rs).
CREATE TABLE revocation_events (
    seq         BIGINT PRIMARY KEY,
    event_id    TEXT NOT NULL UNIQUE,   -- the SET's jti (UUID v7)
    kind        TEXT NOT NULL,          -- session | subject | token
    subject     TEXT NOT NULL,          -- the user id (sub)
    session_id  TEXT,                   -- kind = session: the access tokens' sid
    jti         TEXT,                   -- kind = token: the access token's jti
    token_exp   BIGINT,                 -- kind = token: when that token expires anyway
    event_time  BIGINT NOT NULL,        -- tokens of `subject` with iat <= this are revoked (kind = subject)
    initiator   TEXT NOT NULL,          -- user | admin | policy | system
    reason      TEXT NOT NULL
);
CREATE INDEX revocation_events_time ON revocation_events (event_time);
CREATE INDEX revocation_events_session ON revocation_events (session_id);
CREATE INDEX revocation_events_jti ON revocation_events (jti);
CREATE INDEX revocation_events_subject ON revocation_events (subject);

CREATE TABLE revocation_feed_head (
    id  BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL
);
INSERT INTO revocation_feed_head (id, seq) VALUES (1, 0);
