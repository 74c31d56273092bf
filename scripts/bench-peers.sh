#!/usr/bin/env bash
# Latchkey against node-oidc-provider, side by side, on the same request: the
# client_credentials grant (client_secret_basic, scope "read") answered with an
# ES256-signed JWT access token. Each server runs alone, pinned to core
# SERVER_CPUS (0); wrk (Debian package `wrk`) drives it from core LOAD_CPUS
# (1) with CONNECTIONS keep-alive connections: a WARMUP-second run first
# (discarded), then DURATION seconds measured. If any answer of either run was
# not a 2xx, or wrk saw a socket error, the script prints what it got and
# refuses to report a rate (exit 1): a 429 is not a grant, so Latchkey's
# per-client token rate limit is switched off for the run.
#
# Prerequisites: cargo build --release -p latchkey; apt-get install wrk;
#   (cd scripts/bench-peers && npm ci)   # node-oidc-provider, pinned in package-lock.json
# Usage: scripts/bench-peers.sh
# Environment: DURATION (10), WARMUP (3), CONNECTIONS (32), PORT (18080),
#   PEER_PORT (18081), SERVER_CPUS (0), LOAD_CPUS (1), CARGO_TARGET_DIR (target).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$(cd "$ROOT" && realpath -m "${CARGO_TARGET_DIR:-target}")/release"
PEER="$ROOT/scripts/bench-peers"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-3}"
CONNECTIONS="${CONNECTIONS:-32}"
PORT="${PORT:-18080}"
PEER_PORT="${PEER_PORT:-18081}"
SERVER_CPUS="${SERVER_CPUS:-0}"
LOAD_CPUS="${LOAD_CPUS:-1}"

[ -x "$BIN/latchkey" ] || { echo "build first: cargo build --release -p latchkey ($BIN)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
[ -d "$PEER/node_modules/oidc-provider" ] || { echo "install the peer first: (cd scripts/bench-peers && npm ci)" >&2; exit 1; }

DIR="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT

# wrk script: POST the grant, count every answer that is not a 2xx (per
# thread), and print the totals in a form this script parses.
cat >"$DIR/grant.lua" <<'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  wrk.method = "POST"
  wrk.body = "grant_type=client_credentials&scope=read"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.headers["Authorization"] = "Basic " .. os.getenv("BENCH_BASIC")
  bad, first_bad = 0, ""
end
function response(status, headers, body)
  if status < 200 or status > 299 then
    if bad == 0 then first_bad = status .. " " .. string.sub(body, 1, 200) end
    bad = bad + 1
  end
end
function done(summary, latency, requests)
  local non2xx, first = 0, ""
  for _, t in ipairs(threads) do
    non2xx = non2xx + t:get("bad")
    if first == "" then first = t:get("first_bad") end
  end
  local e = summary.errors
  io.write(string.format("RESULT requests=%d seconds=%.3f non2xx=%d socket_errors=%d p50_ms=%.2f p99_ms=%.2f first_bad=%s\n",
    summary.requests, summary.duration / 1e6, non2xx,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000, first))
end
LUA

wait_for() {
  for _ in $(seq 1 150); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "no answer from $1" >&2; return 1
}

# Checks one answer by hand: 200 and an ES256 JWT.
check_grant() {
  local url=$1 basic=$2 answer
  answer=$(curl -sS -H "Authorization: Basic $basic" -d grant_type=client_credentials -d scope=read "$url")
  python3 - "$answer" <<'PY'
import base64, json, sys
answer = json.loads(sys.argv[1])
token = answer["access_token"]
head = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
assert head["alg"] == "ES256" and token.count(".") == 2, (head, answer)
PY
}

# run NAME URL BASIC: warm-up, then the measured run; prints "NAME RATE P50 P99".
run() {
  local name=$1 url=$2 basic=$3 line
  check_grant "$url" "$basic"
  for phase in warmup measured; do
    local seconds=$WARMUP
    [ "$phase" = measured ] && seconds=$DURATION
    line=$(BENCH_BASIC="$basic" taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNECTIONS" -d"${seconds}s" \
      -s "$DIR/grant.lua" "$url" | grep '^RESULT')
    local non2xx errors
    non2xx=$(sed -E 's/.* non2xx=([0-9]+).*/\1/' <<<"$line")
    errors=$(sed -E 's/.* socket_errors=([0-9]+).*/\1/' <<<"$line")
    if [ "$non2xx" != 0 ] || [ "$errors" != 0 ]; then
      echo "$name ($phase): $line" >&2
      echo "refusing to report a rate: $non2xx answers were not 2xx, $errors socket errors" >&2
      exit 1
    fi
  done
  python3 - "$name" "$line" <<'PY'
import sys
name, line = sys.argv[1], sys.argv[2]
f = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
print(name, round(int(f["requests"]) / float(f["seconds"])), f["p50_ms"], f["p99_ms"])
PY
}

echo "$(date -u +%FT%TZ), $(nproc) cores, servers on CPU $SERVER_CPUS, wrk on CPU $LOAD_CPUS," \
  "$CONNECTIONS connections, ${WARMUP}s warm-up + ${DURATION}s measured" >&2

# --- Latchkey: `latchkey dev` in a fresh folder (SQLite), ES256 access tokens.
(
  cd "$DIR"
  LATCHKEY_BIND="127.0.0.1:$PORT" LATCHKEY_TOKENS__MAX_TOKEN_REQUESTS_PER_CLIENT_PER_MINUTE=0 \
    exec taskset -c "$SERVER_CPUS" "$BIN/latchkey" dev >latchkey.log 2>&1
) &
PIDS+=($!)
wait_for "http://127.0.0.1:$PORT/healthz"
CREATED=$(cd "$DIR" && "$BIN/latchkey" client create --name bench --grant client_credentials --scope read --json)
LK_BASIC=$(python3 -c 'import base64,json,sys; c=json.load(sys.stdin); print(base64.b64encode((c["client_id"] + ":" + c["client_secret"]).encode()).decode())' <<<"$CREATED")
LK=$(run latchkey "http://127.0.0.1:$PORT/oauth2/token" "$LK_BASIC")
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true

# --- node-oidc-provider: the same grant, same client authentication, ES256 JWT.
SECRET=bench-secret-bench-secret-bench-secret
PORT="$PEER_PORT" CLIENT_ID=bench CLIENT_SECRET="$SECRET" NODE_ENV=production \
  taskset -c "$SERVER_CPUS" node "$PEER/provider.mjs" >"$DIR/peer.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$PEER_PORT/.well-known/openid-configuration"
NOP=$(run node-oidc-provider "http://127.0.0.1:$PEER_PORT/token" "$(printf 'bench:%s' "$SECRET" | base64 -w0)")
NOP_VERSION=$(node -e "console.log(require('$PEER/node_modules/oidc-provider/package.json').version)")

read -r _ lk_rate lk_p50 lk_p99 <<<"$LK"
read -r _ nop_rate nop_p50 nop_p99 <<<"$NOP"
printf '%-28s %10s %10s %10s\n' server "grants/s" "p50 ms" "p99 ms"
printf '%-28s %10s %10s %10s\n' "latchkey $("$BIN/latchkey" --version | awk '{print $2}')" "$lk_rate" "$lk_p50" "$lk_p99"
printf '%-28s %10s %10s %10s\n' "node-oidc-provider $NOP_VERSION" "$nop_rate" "$nop_p50" "$nop_p99"
python3 -c "print(f'ratio latchkey / node-oidc-provider: {$lk_rate / $nop_rate:.2f}')"
