#!/usr/bin/env bash
# Writes the upgrade-test fixtures of a release, at that release's commit:
#   crates/latchkey/tests/fixtures/<release>/latchkey.sqlite3   a SQLite database
#   crates/latchkey/tests/fixtures/<release>/postgres.sql       a PostgreSQL dump (INSERTs)
#   crates/latchkey/tests/fixtures/<release>/manifest-*.json    the secrets to use them
# Both databases are filled through the real pages and endpoints by the ignored
# test `release_fixture::write_release_fixture` (users with a password, TOTP and
# a passkey, clients of every signing algorithm, sessions, refresh families,
# tokens, a rotated key ring). Needs PostgreSQL, pg_dump and Chromium.
#
# Usage: scripts/make-release-fixture.sh 0.1.0
set -euo pipefail
cd "$(dirname "$0")/.."
release="${1:?usage: $0 <release, e.g. 0.1.0>}"
out="crates/latchkey/tests/fixtures/$release"
pg="${LATCHKEY_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
db="lk_fixture_$(printf '%s' "$release" | tr -c 'a-zA-Z0-9\n' '_')"
db_url="${pg%/*}/$db"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/latchkey-target-$(pwd -P | cksum | cut -d' ' -f1)}"
export LATCHKEY_FIXTURE_RELEASE="$release"
export LATCHKEY_FIXTURE_COMMIT="$(git rev-parse HEAD)"
export LATCHKEY_FIXTURE_OUT="$(pwd)/$out"
mkdir -p "$out"

write() {
  cargo test -p latchkey --test it --locked -- --ignored --exact \
    release_fixture::write_release_fixture --nocapture
}

LATCHKEY_FIXTURE_BACKEND=sqlite LATCHKEY_FIXTURE_PORT=47101 write

psql "$pg" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
LATCHKEY_FIXTURE_BACKEND=postgres LATCHKEY_FIXTURE_PORT=47102 LATCHKEY_FIXTURE_DATABASE_URL="$db_url" write
# Plain SQL with INSERTs (a test replays it without psql); psql meta-commands
# (`\restrict`) are left out.
pg_dump --no-owner --no-privileges --inserts --column-inserts "$db_url" | grep -v '^\\' > "$out/postgres.sql"
psql "$pg" -qc "DROP DATABASE $db"
ls -l "$out"
