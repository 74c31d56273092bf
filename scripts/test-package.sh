#!/usr/bin/env bash
# Installs a Latchkey .deb on this machine (root required), starts
# `latchkey serve` from it as the service would — as the latchkey user, with
# /etc/latchkey/latchkey.toml, migrations first — against PostgreSQL, creates
# the first administrator with `latchkey user create --role admin`, signs in,
# then purges the package and drops its database.
#
#   ./scripts/test-package.sh target/deb/latchkey_0.1.0_amd64.deb
#
# PostgreSQL comes from LATCHKEY_TEST_POSTGRES_URL (a server where the
# connecting role may create databases). Without systemd running (a
# container), the unit is checked with systemd-analyze when available and its
# ExecStartPre/ExecStart are run directly, as its User=.
set -euo pipefail

deb="${1:?usage: $0 PACKAGE.deb}"
admin_url="${LATCHKEY_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
say() { printf '==> package: %s\n' "$*" >&2; }
fail() { printf '==> package: FAILED: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "must run as root (it installs a package)"
command -v psql >/dev/null || fail "psql is needed"

db="lk_pkg_$$"
server_pid=""
log="$(mktemp)"
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  dpkg --purge latchkey >/dev/null 2>&1 || true
  psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  rm -f "$log" "$jar"
}
jar="$(mktemp)"
trap cleanup EXIT

say "installing $(basename "$deb")"
dpkg --purge latchkey >/dev/null 2>&1 || true
dpkg -i "$deb" >&2 || fail "dpkg -i"

# What the package promises.
getent passwd latchkey >/dev/null || fail "no latchkey system user"
[ "$(getent passwd latchkey | cut -d: -f7)" = /usr/sbin/nologin ] || fail "the latchkey user has a login shell"
[ "$(stat -c '%U:%G %a' /etc/latchkey/master.key)" = "root:latchkey 640" ] || fail "master.key is not root:latchkey 0640"
[ "$(stat -c '%U:%G %a' /var/lib/latchkey)" = "latchkey:latchkey 750" ] || fail "/var/lib/latchkey is not latchkey:latchkey 0750"
unit=/lib/systemd/system/latchkey.service
for line in User=latchkey ProtectSystem=strict StateDirectory=latchkey \
    "ExecStartPre=/bin/sh -c 'if [ \"\$\${LATCHKEY_DATABASE__MIGRATE_ON_START:-true}\" != false ]; then exec /usr/bin/latchkey migrate; fi'" "ExecStart=/usr/bin/latchkey serve" NoNewPrivileges=true \
    PrivateUsers=true PrivateMounts=true "SystemCallFilter=~@privileged @resources" MemoryMax=2G TasksMax=1024; do
  grep -qxF "$line" "$unit" || fail "$unit lacks $line"
done
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify "$unit" >&2 || fail "systemd-analyze verify $unit"
fi
dpkg-query -W -f='${Conffiles}\n' latchkey | grep -q /etc/latchkey/latchkey.toml || fail "latchkey.toml is not a conffile"

say "PostgreSQL database $db"
psql "$admin_url" -qc "CREATE DATABASE $db" >/dev/null || fail "cannot create a database at $admin_url"
url="$(printf '%s' "$admin_url" | sed -E "s#/[^/?]*(\\?|$)#/$db\\1#")"
port=$((20000 + RANDOM % 20000))
# What an operator writes in latchkey.env; the issuer is loopback here.
as_service() {
  runuser -u latchkey -- env -i PATH=/usr/bin:/bin HOME=/var/lib/latchkey \
    LATCHKEY_CONFIG=/etc/latchkey/latchkey.toml LATCHKEY_DATABASE_URL="$url" \
    LATCHKEY_BIND="127.0.0.1:$port" LATCHKEY_ISSUER="http://localhost:$port" \
    LATCHKEY_LOG_FORMAT=text "$@"
}
cd /var/lib/latchkey
say "ExecStartPre: latchkey migrate"
as_service /usr/bin/latchkey migrate >&2 || fail "latchkey migrate"
say "first administrator: latchkey user create --role admin"
printf 'package test passphrase\n' \
  | as_service /usr/bin/latchkey user create --email admin@example.com --role admin --password-stdin >&2 \
  || fail "user create"
say "ExecStart: latchkey serve on 127.0.0.1:$port"
as_service /usr/bin/latchkey serve >"$log" 2>&1 &
server_pid=$!
for _ in $(seq 1 60); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; fail "serve exited"; }
  sleep 0.5
done
curl -fs "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$log" >&2; fail "not ready"; }

say "signing in"
status="$(curl -s -o /dev/null -w '%{http_code}' -c "$jar" -H 'content-type: application/json' \
  -d '{"email":"admin@example.com","password":"package test passphrase"}' "http://127.0.0.1:$port/login")"
[ "$status" = 200 ] || { cat "$log" >&2; fail "sign-in answered $status"; }
account="$(curl -s -b "$jar" -H 'accept: application/json' "http://127.0.0.1:$port/account")"
case "$account" in *admin@example.com*) ;; *) fail "the session does not reach /account: $account" ;; esac
wrong="$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
  -d '{"email":"admin@example.com","password":"not it"}' "http://127.0.0.1:$port/login")"
[ "$wrong" = 401 ] || fail "a wrong password answered $wrong"

kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
say "purging"
dpkg --purge latchkey >&2 || fail "dpkg --purge"
[ ! -e /usr/bin/latchkey ] && [ ! -e /etc/latchkey/master.key ] || fail "purge left files behind"
say "OK: installed, migrated, served from PostgreSQL, signed in, purged"
