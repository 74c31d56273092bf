#!/usr/bin/env bash
# Measures a release `latchkey dev` server with `latchkey-load`, as described
# in docs/performance.md: server pinned to core 0, load generator to core 1,
# each scenario for DURATION seconds. Prerequisite:
#   cargo build --release -p latchkey -p latchkey-load
# Usage: scripts/load-run.sh [scenario...]   (default: all six, then the
#   experiment client-credentials-eddsa: the same grant for a client whose
#   tokens are signed with EdDSA instead of ES256, auth-code-es256: the
#   flow for a client whose ID tokens are ES256 instead of the default RS256
#   (an RSA-2048 signature is three quarters of a flow's CPU), and the bare
#   Argon2id reference `argon2` on the server's core)
# Environment: PORT (18080), DURATION (10), CONCURRENCY (32), LOGIN_CONCURRENCY (4),
#   SERVER_CPUS (0), LOAD_CPUS (1), CARGO_TARGET_DIR (target), PERF_DIR (unset:
#   when set, each scenario is also profiled with `perf record -g` on the
#   server into PERF_DIR/<scenario>.data, with a flat report beside it in
#   PERF_DIR/<scenario>.txt; needs Debian's linux-perf).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$(cd "$ROOT" && realpath -m "${CARGO_TARGET_DIR:-target}")/release"
[ -x "$BIN/latchkey" ] && [ -x "$BIN/latchkey-load" ] || {
  echo "build first: cargo build --release -p latchkey -p latchkey-load ($BIN)" >&2
  exit 1
}
PORT="${PORT:-18080}"
DURATION="${DURATION:-10}"
CONCURRENCY="${CONCURRENCY:-32}"
LOGIN_CONCURRENCY="${LOGIN_CONCURRENCY:-4}"
SERVER_CPUS="${SERVER_CPUS:-0}"
LOAD_CPUS="${LOAD_CPUS:-1}"
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -eq 0 ] && SCENARIOS=(jwks client-credentials introspection refresh auth-code password-login client-credentials-eddsa auth-code-es256 argon2)

DIR="$(mktemp -d)"
cd "$DIR"
export LATCHKEY_BIND="127.0.0.1:$PORT"
export LATCHKEY_TOKENS__MAX_TOKEN_REQUESTS_PER_CLIENT_PER_MINUTE=0
export LATCHKEY_TOKENS__ADDITIONAL_ALGORITHMS='["EdDSA"]'
ISSUER="http://$LATCHKEY_BIND"

taskset -c "$SERVER_CPUS" "$BIN/latchkey" dev >server.log 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fsS "$ISSUER/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "$ISSUER/healthz" >/dev/null

json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

CC=$("$BIN/latchkey" client create --name load-cc --grant client_credentials --json)
CC_ID=$(json_field client_id <<<"$CC")
CC_SECRET=$(json_field client_secret <<<"$CC")
ED=$("$BIN/latchkey" client create --name load-cc-eddsa --grant client_credentials --signing-algorithm EdDSA --json)
ED_ID=$(json_field client_id <<<"$ED")
ED_SECRET=$(json_field client_secret <<<"$ED")
WEB=$("$BIN/latchkey" client create --name load-web --first-party \
  --redirect-uri http://127.0.0.1:9/callback \
  --grant authorization_code --grant refresh_token \
  --scope openid --scope offline_access --json)
WEB_ID=$(json_field client_id <<<"$WEB")
WEB_SECRET=$(json_field client_secret <<<"$WEB")
WEB_ES=$("$BIN/latchkey" client create --name load-web-es256 --first-party \
  --redirect-uri http://127.0.0.1:9/callback \
  --grant authorization_code --grant refresh_token \
  --scope openid --scope offline_access --id-token-signed-response-alg ES256 --json)
WEB_ES_ID=$(json_field client_id <<<"$WEB_ES")
WEB_ES_SECRET=$(json_field client_secret <<<"$WEB_ES")
EMAIL=load@example.com
PASSWORD=correct-horse-battery-staple-load
echo "$PASSWORD" | "$BIN/latchkey" user create --email "$EMAIL" --name Load --password-stdin >/dev/null

echo "server pid $PID on CPU $SERVER_CPUS, load on CPU $LOAD_CPUS, $(date -u +%FT%TZ), $(nproc) cores"
for scenario in "${SCENARIOS[@]}"; do
  if [ "$scenario" = argon2 ]; then
    # No server involved: bare Argon2id on the server's core, while it idles.
    taskset -c "$SERVER_CPUS" "$BIN/latchkey-load" argon2 --concurrency 1 --duration "$DURATION"
    continue
  fi
  target=$scenario
  case "$scenario" in
    client-credentials-eddsa) creds=(--client-id "$ED_ID" --client-secret "$ED_SECRET"); n=$CONCURRENCY; target=client-credentials ;;
    client-credentials | introspection) creds=(--client-id "$CC_ID" --client-secret "$CC_SECRET"); n=$CONCURRENCY ;;
    refresh | auth-code) creds=(--client-id "$WEB_ID" --client-secret "$WEB_SECRET" --email "$EMAIL" --password "$PASSWORD"); n=$CONCURRENCY ;;
    auth-code-es256) creds=(--client-id "$WEB_ES_ID" --client-secret "$WEB_ES_SECRET" --email "$EMAIL" --password "$PASSWORD"); n=$CONCURRENCY; target=auth-code ;;
    password-login) creds=(--email "$EMAIL" --password "$PASSWORD"); n=$LOGIN_CONCURRENCY ;;
    *) creds=(); n=$CONCURRENCY ;;
  esac
  if [ -n "${PERF_DIR:-}" ]; then
    mkdir -p "$PERF_DIR"
    perf record -q -F 999 -g -p "$PID" -o "$PERF_DIR/$scenario.data" -- sleep "$((DURATION + 1))" 2>/dev/null &
    PERF_PID=$!
  fi
  taskset -c "$LOAD_CPUS" "$BIN/latchkey-load" "$target" --issuer "$ISSUER" "${creds[@]}" \
    --concurrency "$n" --duration "$DURATION" --server-pid "$PID" ${LOAD_JSON:+--json}
  if [ -n "${PERF_DIR:-}" ]; then
    wait "$PERF_PID" || true
    perf report -q -i "$PERF_DIR/$scenario.data" --no-children --stdio --percent-limit 0.7 -g none \
      >"$PERF_DIR/$scenario.txt" 2>/dev/null || true
  fi
done
