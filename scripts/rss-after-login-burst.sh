#!/usr/bin/env bash
# RSS of `latchkey serve` (SQLite, default Argon2id m=19456 KiB t=2 p=1,
# max_concurrent_hashes = CPUs) before, right after, and 30 s after a
# password-login burst driven by latchkey-load.
set -euo pipefail
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/debug}
DIR=$(mktemp -d); PORT=${PORT:-18431}
export LATCHKEY_DATABASE_URL="sqlite://$DIR/l.db?mode=rwc" LATCHKEY_BIND=127.0.0.1:$PORT \
  LATCHKEY_ISSUER=http://127.0.0.1:$PORT LATCHKEY_MASTER_KEY=$($BIN/latchkey keys generate-master) \
  LATCHKEY_LOG_LEVEL=warn
$BIN/latchkey migrate 2>/dev/null
echo "a long enough passphrase" | $BIN/latchkey user create --email load@example.com --password-stdin >/dev/null 2>&1
$BIN/latchkey serve 2>/dev/null & PID=$!
for i in $(seq 50); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.2; done
rss() { awk '/VmRSS/{print $2/1024 " MiB"}' /proc/$PID/status; }
threads() { awk '/Threads/{print $2}' /proc/$PID/status; }
echo "idle after start:        $(rss) threads=$(threads)"
$BIN/latchkey-load password-login --issuer http://127.0.0.1:$PORT --email load@example.com --password "a long enough passphrase" --concurrency ${CONC:-64} --duration ${DUR:-10} 2>&1 | grep -iE "ops|req|p50|error" | head -4
echo "right after the burst:   $(rss) threads=$(threads)"
sleep 30
echo "30 s after the burst:    $(rss) threads=$(threads)"
kill $PID; wait $PID 2>/dev/null || true; rm -rf "$DIR"
