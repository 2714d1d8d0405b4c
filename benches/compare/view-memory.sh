#!/usr/bin/env bash
# How much of the view cache each built-in view takes over all time, and how long its first
# all-time question takes: the figures behind `--view-warm-days` / `--view-cache-memory`
# advice (BENCHMARKS.md, issue 5, session 29).
#
#   benches/compare/view-memory.sh TABLES_DIR
#
# Starts `tlsrpt query` (target/release, built unless NO_BUILD=1; BIN_DIR=DIR takes another
# build) with a 16 GiB cache and no warming, asks `SELECT count(*) FROM view` of each view in
# turn (which computes and keeps every date), and reads `tlsrpt_query_view_cache_bytes` from
# `GET /metrics` after each: the bytes each view added. Ends with the service's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/compare/common.sh
. benches/compare/common.sh
tables=$(realpath "${1:?usage: view-memory.sh TABLES_DIR}")
bin=$(tlsrpt_bin_dir)

start_query_service "$bin" "$tables" --view-cache-memory 16GiB --view-warm-days 0
sql=$sql_url
metrics=${sql%/v1/sql}/metrics
cache_bytes() { curl -sS "$metrics" | awk '/^tlsrpt_query_view_cache_bytes /{print $2}'; }
echo "tables: $tables"
printf '%-30s %12s %10s %16s\n' view rows first_s cache_bytes
before=$(cache_bytes)
for view in failure_trend_by_result_type failure_trend_by_reporter report_delivery \
  top_failing_sending_ips failure_trend_by_domain failure_trend_by_mx policy_overview; do
  started=$(date +%s.%N)
  rows=$(curl -sS -H 'Accept: text/csv' --data-binary "SELECT count(*) FROM $view" "$sql" | tail -1)
  ended=$(date +%s.%N)
  after=$(cache_bytes)
  printf '%-30s %12s %10.2f %16d\n' "$view" "$rows" "$(awk "BEGIN {print $ended - $started}")" "$((after - before))"
  before=$after
done
echo "all views: $(cache_bytes) bytes kept; tlsrpt query peak RSS (VmHWM): $(awk '/VmHWM/ {printf "%d MB", $2 / 1024}' "/proc/$server/status")"
