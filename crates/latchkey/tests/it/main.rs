//! Integration tests: each module is one feature area; every test starts the
//! real server on a random port and talks HTTP to it, on SQLite and (when
//! `LATCHKEY_TEST_POSTGRES_URL` is set) PostgreSQL.

mod helpers;

mod authorize;
mod cli;
mod client_auth;
mod device_flow;
mod discovery;
mod docs;
mod email_lookalikes;
mod forwarded_for;
mod id_token_algorithms;
mod keys;
mod login;
mod mfa;
mod observability;
mod oidc_rp;
mod passkeys;
mod passkeys_browser;
mod password_change;
mod pkce_opt_out;
mod release_fixture;
mod review_fixes_edges;
mod review_fixes_oidc;
mod review_fixes_policy;
mod review_fixes_tokens;
mod revocation_feed;
mod revocation_integrity;
mod sdk_harness;
mod sessions;
mod storage;
mod token_inspect;
mod tokens;
mod upgrade;
mod verify_sdk;
mod verify_websocket;
mod web_security;
