//! Integration tests: each module is one feature area; every test starts the
//! real server on a random port and talks HTTP to it, on SQLite and (when
//! `LATCHKEY_TEST_POSTGRES_URL` is set) PostgreSQL.

mod support;

mod authorize;
mod cli;
mod cli_help;
mod client_auth;
mod device_flow;
mod discovery;
mod docs;
mod email_lookalikes;
mod faults;
mod federation;
mod forwarded_for;
mod id_token_algorithms;
mod import_examples;
mod keys;
mod layering;
mod login;
mod mfa;
mod observability;
mod oidc_rp;
mod pages_browser;
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
mod sessions;
mod startup_errors;
mod storage;
mod token_inspect;
mod tokens;
mod upgrade;
mod verify_sdk;
mod verify_websocket;
mod web_security;
