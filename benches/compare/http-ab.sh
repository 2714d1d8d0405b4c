#!/usr/bin/env bash
# Two builds of `tlsrpt up` under the same HTTP load, alternately, to compare server CPU per
# acknowledged report on a machine whose speed drifts (this one's drifted by a fifth within
# an hour for one build): compare within a pair, not across pairs.
#
#   benches/compare/http-ab.sh BINARY_A BINARY_B [PAIRS] [CONNECTIONS]
#
# Build each binary first (`cargo build --release -p tlsrpt`, copy target/release/tlsrpt
# aside, change, build again). Each run: `up` on a fresh data directory, `tlsrpt-load` posting
# bench-profile gzip reports for 25 s; after 5 s of load, 10 s are measured (accepted reports
# from `/metrics`, the server's and the client's CPU from /proc). Prints one line per run:
# A or B, accepted/s, server and client CPU per report, and the server's peak RSS (VmHWM).
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/compare/common.sh
binary_a=$(realpath "$1")
binary_b=$(realpath "$2")
pairs=${3:-3}
connections=${4:-256}

cargo build --quiet --release -p tlsrpt-benches --bin tlsrpt-load --bin tlsrpt-gen
work=$(mktemp -d)
server=
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then kill -9 "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
target/release/tlsrpt-gen --reports 20000 --seed 8460 --profile bench --format jsonl \
  --out "$work/gen" >/dev/null

one_run() {
  local label=$1 binary=$2 data="$work/data-$1"
  rm -rf "$data"
  "$binary" up --data-dir "$data" --http-listen 127.0.0.1:0 --smtp-listen off \
    --query-listen 127.0.0.1:0 --flight-listen 127.0.0.1:0 >"$work/banner" 2>"$work/log" &
  server=$!
  wait_for_banner "$server" "$work/banner" "$work/log"
  local url base
  url=$(sed -n 's/.*reports over HTTP  *POST \(http[^ ]*\).*/\1/p' "$work/banner")
  base=${url%/v1/reports}
  target/release/tlsrpt-load --url "$url" --reports "$work/gen/reports.jsonl" \
    --connections "$connections" --duration 25 --bodies 900000 >/dev/null 2>"$work/load.err" &
  local client=$!
  until grep -q ready "$work/load.err" 2>/dev/null; do sleep 0.2; done
  sleep 5
  accepted() { curl -s "$base/metrics" | awk '/^tlsrpt_accepted_total/ {s += $2} END {print s + 0}'; }
  local a0 s0 c0 t0 a1 s1 c1 t1
  a0=$(accepted); s0=$(cpu_ticks "$server"); c0=$(cpu_ticks "$client"); t0=$(date +%s.%N)
  sleep 10
  a1=$(accepted); s1=$(cpu_ticks "$server"); c1=$(cpu_ticks "$client"); t1=$(date +%s.%N)
  wait "$client" || true
  local rss
  rss=$(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$server/status")
  kill -TERM "$server"; wait "$server" || true; server=
  python3 - "$label" "$a0" "$a1" "$s0" "$s1" "$c0" "$c1" "$t0" "$t1" "$(getconf CLK_TCK)" "$rss" <<'PY'
import sys
label = sys.argv[1]
a0, a1, s0, s1, c0, c1, t0, t1, hz, rss = (float(x) for x in sys.argv[2:])
n, t = a1 - a0, t1 - t0
print(f"{label} accepted/s {n / t:.0f}  server {(s1 - s0) / hz / n * 1e6:.1f} us/report  "
      f"client {(c1 - c0) / hz / n * 1e6:.1f} us/report  peak RSS {rss:.0f} MB")
PY
}
for _ in $(seq 1 "$pairs"); do
  one_run A "$binary_a"
  one_run B "$binary_b"
done
