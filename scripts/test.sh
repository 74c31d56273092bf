#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a developer's: starts the local
# PostgreSQL and Redis if they are installed but stopped, points the tests at
# them, then runs formatting, lints, unit, integration and doc tests.
#
# PostgreSQL tests run when LATCHKEY_TEST_POSTGRES_URL is reachable; under CI
# (CI=true) they are required, and a missing PostgreSQL fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

# One build directory outside the clone, reused between runs of the same
# checkout. It is keyed by the checkout's path: cargo judges freshness from the
# source paths recorded when an artifact was built, so two checkouts sharing
# one directory could run each other's stale builds.
checkout_key="$(pwd -P | cksum | cut -d' ' -f1)"
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR="/var/tmp/latchkey-target-$checkout_key"
  # A new checkout on a machine that built Latchkey before (a fresh CI clone)
  # starts from a copy of the newest build directory: the dependencies (most
  # of a cold build) are reused, while this checkout's own crates rebuild
  # because their sources are made newer than anything in the copy.
  if [ ! -d "$CARGO_TARGET_DIR" ]; then
    seed="$(ls -dt /var/tmp/latchkey-target-* 2>/dev/null | grep -v '\.partial\.' | head -n1 || true)"
    if [ -n "$seed" ] && [ -d "$seed/debug" ]; then
      printf '==> %s\n' "seeding $CARGO_TARGET_DIR from $seed" >&2
      cp -a "$seed" "$CARGO_TARGET_DIR.partial.$$" 2>/dev/null \
        && mv "$CARGO_TARGET_DIR.partial.$$" "$CARGO_TARGET_DIR" \
        && find crates -type f -exec touch {} + \
        || rm -rf "$CARGO_TARGET_DIR.partial.$$"
    fi
  fi
fi
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
  # Tests drop their own databases; leftovers of interrupted runs are dropped
  # here in one background session, so they never delay the run.
  say "PostgreSQL is up"
  ( psql "$LATCHKEY_TEST_POSTGRES_URL" -Atc "SELECT 'DROP DATABASE IF EXISTS ' || quote_ident(datname) || ';' FROM pg_database WHERE datname LIKE 'lk_test_%'" 2>/dev/null \
      | nice psql "$LATCHKEY_TEST_POSTGRES_URL" -q >/dev/null 2>&1 || true ) &
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

# Debian packages the build and the tests need: OpenSSL headers for
# webauthn-rs (passkeys), and Chromium for the browser tests (passkeys through
# a WebAuthn virtual authenticator), which run whenever /usr/bin/chromium
# exists; on CI they are required (LATCHKEY_TEST_BROWSER=1), so a missing
# browser fails the run.
missing=()
dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  say "installing ${missing[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
    || say "could not install ${missing[*]}"
fi
if [ -n "${CI:-}" ]; then
  export LATCHKEY_TEST_BROWSER=1
fi

# cargo-nextest runs the tests; installed from crates.io when missing.
if ! cargo nextest --version >/dev/null 2>&1; then
  say "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
say "doc tests"
cargo test --workspace --locked --doc
say "cargo nextest (unit + integration, SQLite and PostgreSQL)"
cargo nextest run --workspace --locked --no-fail-fast

# The Debian package: built from packaging/debian/, installed on this machine,
# started against PostgreSQL, signed in to, purged. On CI (root) it is
# required; elsewhere it runs only with LATCHKEY_TEST_PACKAGE=1, since it
# installs a package. CI packages the debug binary the tests above built
# (LATCHKEY_PACKAGE_PROFILE=dev): a release build would cost ~20 CPU-minutes
# more; releases use `./scripts/package-deb.sh release`.
if [ -n "${CI:-}" ] || [ "${LATCHKEY_TEST_PACKAGE:-}" = 1 ]; then
  profile="${LATCHKEY_PACKAGE_PROFILE:-dev}"
  say "Debian package ($profile) installed and started against PostgreSQL"
  if [ "$profile" = dev ]; then
    export LATCHKEY_PACKAGE_BINARY="${LATCHKEY_PACKAGE_BINARY:-$CARGO_TARGET_DIR/debug/latchkey}"
  fi
  deb="$(./scripts/package-deb.sh "$profile")"
  ./scripts/test-package.sh "$deb"
fi
