#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a developer's: starts the local
# PostgreSQL and Redis if they are installed but stopped, points the tests at
# them, then runs formatting, lints, unit, integration and doc tests.
#
# PostgreSQL tests run when LATCHKEY_TEST_POSTGRES_URL is reachable; under CI
# (CI=true) they are required, and a missing PostgreSQL fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

# One build directory outside the clone, reused between runs.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/latchkey-target}"
export LATCHKEY_TEST_POSTGRES_URL="${LATCHKEY_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
export LATCHKEY_TEST_REDIS_URL="${LATCHKEY_TEST_REDIS_URL:-redis://127.0.0.1:6379}"

say() { printf '==> %s\n' "$*" >&2; }

postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! postgres_up && command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  say "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  for _ in $(seq 1 30); do postgres_up && break; sleep 1; done
fi
if postgres_up; then
  say "PostgreSQL is up; dropping databases left by earlier test runs"
  psql "$LATCHKEY_TEST_POSTGRES_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'lk_test_%'" 2>/dev/null \
    | while read -r db; do psql "$LATCHKEY_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true; done
elif [ -n "${CI:-}" ]; then
  say "PostgreSQL is required on CI but not reachable at $LATCHKEY_TEST_POSTGRES_URL"; exit 1
else
  say "PostgreSQL not reachable: PostgreSQL tests will be skipped"; unset LATCHKEY_TEST_POSTGRES_URL
fi

redis_up() { redis-cli -u "$LATCHKEY_TEST_REDIS_URL" ping >/dev/null 2>&1; }
if ! redis_up && command -v redis-server >/dev/null 2>&1; then
  say "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
  for _ in $(seq 1 20); do redis_up && break; sleep 0.5; done
fi

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
say "doc tests"
cargo test --workspace --locked --doc
say "cargo nextest (unit + integration, SQLite and PostgreSQL)"
cargo nextest run --workspace --locked --no-fail-fast
