-- Grant revocation events (issue #5 review): withdrawing consent to a client,
-- or deleting a client, revokes the access tokens that client already holds.
-- `kind = 'grant'` rows name the client here; `subject` is the user, or ''
-- when the event concerns every user of the client (client deleted).
ALTER TABLE revocation_events ADD COLUMN client_id TEXT;
CREATE INDEX revocation_events_client ON revocation_events (client_id);
