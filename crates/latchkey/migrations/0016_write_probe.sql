-- One row `/readyz` rewrites on every probe: readiness means the database
-- accepts writes as large as a sign-in's (a full disk, an I/O error or a
-- held write lock answers 503), not only that it answers reads. `payload` is
-- 32 KiB of fresh random text per probe, so the write needs new pages (on
-- SQLite, new WAL frames) as real writes do.
CREATE TABLE write_probe (
    id        BIGINT PRIMARY KEY,
    probed_at BIGINT NOT NULL,
    payload   TEXT NOT NULL
);
INSERT INTO write_probe (id, probed_at, payload) VALUES (1, 0, '');
