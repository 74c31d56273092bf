#!/usr/bin/env bash
# Counts the server's instructions per request with valgrind's callgrind
# (COUNT=instructions, the default), or its SQL statements per request
# (COUNT=statements: each is a database round trip, and on SQLite two thread
# switches; read from sqlx's statement log). Unlike a rate, neither count
# moves with whatever else the machine is doing, so a change to the hot path
# can be measured before/after on a busy machine. Only user-space
# instructions are counted: a saved round trip also saves kernel time that
# callgrind cannot see (scripts/load-run.sh shows it as CPU-s per 1,000
# requests), which the statement count shows instead.
# Prerequisite: cargo build --release -p latchkey -p latchkey-load
# Usage: scripts/count-instructions.sh [scenario...]
#   (default: client-credentials introspection refresh auth-code auth-code-es256)
# Environment: PORT (18090), DURATION (20), CONCURRENCY (4), CARGO_TARGET_DIR (target).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$(cd "$ROOT" && realpath -m "${CARGO_TARGET_DIR:-target}")/release"
[ -x "$BIN/latchkey" ] && [ -x "$BIN/latchkey-load" ] || {
  echo "build first: cargo build --release -p latchkey -p latchkey-load ($BIN)" >&2
  exit 1
}
if [ "${COUNT:-instructions}" != statements ] && ! command -v callgrind_control >/dev/null; then
  echo "needs valgrind (Debian package valgrind)" >&2
  exit 1
fi
COUNT="${COUNT:-instructions}"
PORT="${PORT:-18090}"
DURATION="${DURATION:-20}"
CONCURRENCY="${CONCURRENCY:-4}"
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -eq 0 ] && SCENARIOS=(client-credentials introspection refresh auth-code auth-code-es256)

DIR="$(mktemp -d)"
cd "$DIR"
export LATCHKEY_BIND="127.0.0.1:$PORT"
export LATCHKEY_TOKENS__MAX_TOKEN_REQUESTS_PER_CLIENT_PER_MINUTE=0
ISSUER="http://$LATCHKEY_BIND"

if [ "$COUNT" = statements ]; then
  RUST_LOG="${RUST_LOG:-info},sqlx::query=debug" "$BIN/latchkey" dev >server.log 2>&1 &
else
  valgrind --tool=callgrind --callgrind-out-file="$DIR/callgrind.out.%p" \
    "$BIN/latchkey" dev >server.log 2>&1 &
fi
PID=$!
trap 'kill "$PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  curl -fsS "$ISSUER/healthz" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fsS "$ISSUER/healthz" >/dev/null

json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
CC=$("$BIN/latchkey" client create --name count-cc --grant client_credentials --json)
CC_ID=$(json_field client_id <<<"$CC")
CC_SECRET=$(json_field client_secret <<<"$CC")
WEB=$("$BIN/latchkey" client create --name count-web --first-party \
  --redirect-uri http://127.0.0.1:9/callback \
  --grant authorization_code --grant refresh_token \
  --scope openid --scope offline_access --json)
WEB_ID=$(json_field client_id <<<"$WEB")
WEB_SECRET=$(json_field client_secret <<<"$WEB")
WEB_ES=$("$BIN/latchkey" client create --name count-web-es256 --first-party \
  --redirect-uri http://127.0.0.1:9/callback \
  --grant authorization_code --grant refresh_token \
  --scope openid --scope offline_access --id-token-signed-response-alg ES256 --json)
WEB_ES_ID=$(json_field client_id <<<"$WEB_ES")
WEB_ES_SECRET=$(json_field client_secret <<<"$WEB_ES")
EMAIL=count@example.com
PASSWORD=correct-horse-battery-staple-count
echo "$PASSWORD" | "$BIN/latchkey" user create --email "$EMAIL" --name Count --password-stdin >/dev/null

echo "$COUNT of server pid $PID, $(date -u +%FT%TZ), $CONCURRENCY workers"
# Each scenario runs twice, for SHORT and LONG seconds, with the counters
# zeroed before each run: the difference of the two counts over the
# difference of the two operation counts is the cost of one operation, with
# the tool's set-up (sign-ins, first flows) and start-up cancelled out.
SHORT="${SHORT:-8}"
LONG="${LONG:-24}"
for scenario in "${SCENARIOS[@]}"; do
  case "$scenario" in
    client-credentials | introspection) creds=(--client-id "$CC_ID" --client-secret "$CC_SECRET") ;;
    refresh | auth-code) creds=(--client-id "$WEB_ID" --client-secret "$WEB_SECRET" --email "$EMAIL" --password "$PASSWORD") ;;
    auth-code-es256) creds=(--client-id "$WEB_ES_ID" --client-secret "$WEB_ES_SECRET" --email "$EMAIL" --password "$PASSWORD") ;;
    *) echo "unknown scenario $scenario" >&2; exit 1 ;;
  esac
  results=()
  for seconds in "$SHORT" "$LONG"; do
    [ "$COUNT" = statements ] && before=$(grep -c 'sqlx::query' server.log || true)
    [ "$COUNT" = statements ] || callgrind_control -z "$PID" >/dev/null
    out="$("$BIN/latchkey-load" "${scenario%-es256}" --issuer "$ISSUER" "${creds[@]}" \
      --concurrency "$CONCURRENCY" --duration "$seconds" --json)"
    if [ "$COUNT" = statements ]; then
      sleep 0.5
      instructions=$(( $(grep -c 'sqlx::query' server.log || true) - before ))
    else
      rm -f "$DIR"/callgrind.out.*
      callgrind_control -d "$PID" >/dev/null
      for _ in $(seq 1 20); do ls "$DIR"/callgrind.out.* >/dev/null 2>&1 && break; sleep 0.5; done
      dump=$(ls -t "$DIR"/callgrind.out.* | head -n1)
      instructions=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
    fi
    ops=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert r["errors"]==0, r["first_error"]; print(r["operations"])' "$out")
    results+=("$instructions" "$ops")
  done
  python3 - "$COUNT" "$scenario" "${results[@]}" <<'PY'
import sys
count, scenario, i1, o1, i2, o2 = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
per_op = (i2 - i1) / (o2 - o1)
shown = f"{per_op:,.2f}" if count == "statements" else f"{per_op/1000:,.0f} k"
print(f"{scenario}: {shown} {count} per operation "
      f"(runs: {o1} ops / {i1:,} {count}, {o2} ops / {i2:,} {count})")
PY
done
