#!/usr/bin/env bash
# HTTP load through `tlsrpt up`: gzip reports posted over keep-alive connections by
# tlsrpt-load on this same machine, acknowledged only once durable in the embedded log,
# while the transformer writes Parquet and SQL answers in the same process.
#
#   benches/compare/http-load.sh [SECONDS] [CONNECTIONS] [extra tlsrpt up flags...]
#   FRESHNESS=0 benches/compare/http-load.sh ...   (no SQL during the run: ingest alone)
#
# Prints the load client's JSON (acknowledged reports/s after a 2 s warm-up, latency
# percentiles, freshness from 2xx to visible in SQL, rows in the tables against 2xx
# answers) and the server's peak RSS (VmHWM), then stops the server with SIGTERM and
# checks it exits 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/compare/common.sh
seconds=${1:-20}
connections=${2:-64}
shift $(( $# < 2 ? $# : 2 ))

cargo build --quiet --release -p tlsrpt --bin tlsrpt
cargo build --quiet --release -p tlsrpt-benches --bin tlsrpt-load --bin tlsrpt-gen

work=$(mktemp -d)
server=
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then kill -9 "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

templates "$work/gen"

echo "machine: $(nproc) CPUs; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
target/release/tlsrpt up --data-dir "$work/data" --http-listen 127.0.0.1:0 \
  --smtp-listen off --query-listen 127.0.0.1:0 --flight-listen 127.0.0.1:0 "$@" >"$work/banner" 2>"$work/log" &
server=$!
wait_for_banner "$server" "$work/banner" "$work/log"
reports_url=$(sed -n 's/.*reports over HTTP  *POST \(http[^ ]*\).*/\1/p' "$work/banner")
sql_url=$(sql_url_of "$work/banner")
echo "server: pid $server, reports $reports_url, sql $sql_url"

# Enough distinct bodies for 60,000 reports/s over the run: none is posted twice.
bodies=$(( 60000 * seconds ))
server_ticks_before=$(cpu_ticks "$server")
sql_flags=(--sql-url "$sql_url")
if [ "${FRESHNESS:-1}" = 0 ]; then sql_flags=(); fi
status=0
target/release/tlsrpt-load --url "$reports_url" "${sql_flags[@]}" \
  --reports "$work/gen/reports.jsonl" --connections "$connections" --duration "$seconds" \
  --bodies "$bodies" | tee "$work/load.json" || status=$?

# Server CPU over the whole run (warm-up, and with FRESHNESS=1 the catch-up until every
# acknowledged report is in the tables) per acknowledged report.
cpu_per_report server "$(cpu_ticks "$server")" "$server_ticks_before" "$work/load.json"

echo "server peak RSS (VmHWM): $(awk '/VmHWM/ {printf "%.0f MB", $2/1024}' /proc/$server/status)"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
kill -TERM "$server"
if wait "$server"; then echo "server stopped on SIGTERM: exit 0"; else echo "server exit $?" >&2; exit 1; fi
server=
exit $status
