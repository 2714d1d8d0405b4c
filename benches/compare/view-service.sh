#!/usr/bin/env bash
# What `tlsrpt query` does around the views, as an operator and `curl` see it:
# - the start's round of warming (its log lines: the views computed over every date, and
#   those that did not fit in the view cache, with their estimates);
# - each of QUESTIONS asked RUNS times with `curl -o /dev/null` (an Arrow IPC answer read as
#   fast as the socket gives it, no decoding): the time to the answer's start and to its end,
#   and its bytes, or the HTTP status when it is refused;
# - then 65 s with nothing asked, warming every 20 s (`--view-warm-every 20s`): the last
#   round's length, the rounds done and the service's CPU per round, the cache's memory by
#   view.
#
#   benches/compare/view-service.sh TABLES_DIR [RUNS]
#
# TABLES_DIR is DATA_DIR/tables (make one with `benches/compare/duckdb-failures.sh generate`).
# BIN_DIR=DIR takes that build of `tlsrpt` (default target/release, built unless NO_BUILD=1).
# EXTRA_ARGS are added to `tlsrpt query`'s (e.g. `--view-cache-memory 1GiB`); DEFAULTS=1 keeps
# the query limits at their defaults instead of lifting them as the other benches do (then
# `SELECT *` of the largest views is refused with `too_many_rows`). QUESTIONS is a file of
# statements, one per line (default: all of failure_trend_by_mx, all of
# failure_trend_by_domain, and the monthly trend per MX).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/compare/common.sh
. benches/compare/common.sh
query_bench_args view-service.sh 5 "$@"

# shellcheck disable=SC2086 # EXTRA_ARGS splits into words on purpose
start_query_service "$bin" "$tables" --view-warm-every 20s ${EXTRA_ARGS:-}
base=${sql_url%/v1/sql}
echo "machine: $(nproc) CPUs; load before: $(cut -d' ' -f1-3 /proc/loadavg); tables: $tables"
wait_for_first_warm_round
grep -E 'INFO|WARN' "$work/log" | sed 's/^[^ ]* *//' | cut -c1-600

questions=${QUESTIONS:-}
if [ -z "$questions" ]; then
  questions=$work/questions
  cat >"$questions" <<'SQL'
SELECT * FROM failure_trend_by_mx
SELECT * FROM failure_trend_by_domain
SELECT date_trunc('month', date) AS month, receiving_mx_hostname, sum(failed_sessions) AS failed FROM failure_trend_by_mx GROUP BY 1, 2
SQL
fi
while IFS= read -r sql; do
  [ -n "$sql" ] || continue
  echo "$sql"
  for _ in $(seq 1 "$runs"); do
    curl -s -o /dev/null -H 'Accept: application/vnd.apache.arrow.stream' --data-binary "$sql" \
      -w '  HTTP %{http_code}: start %{time_starttransfer} s, end %{time_total} s, %{size_download} bytes\n' \
      "$sql_url"
  done
done <"$questions"

rounds() { curl -s "$base/metrics" | sed -n 's/^tlsrpt_query_view_warm_rounds_total{outcome="done"} //p'; }
rounds_before=$(rounds)
ticks_before=$(cpu_ticks "$server")
sleep 65
ticks_after=$(cpu_ticks "$server")
rounds_after=$(rounds)
curl -s "$base/metrics" |
  grep -E '^tlsrpt_query_view_(warm_last_round_seconds|warm_all_time_views|cache_bytes|cache_view_bytes|cache_dropped_total)'
python3 - "$ticks_before" "$ticks_after" "$rounds_before" "$rounds_after" "$(getconf CLK_TCK)" <<'PY'
import sys
before, after, r0, r1, hz = (float(x) for x in sys.argv[1:])
rounds = r1 - r0
cpu = (after - before) / hz
print(f"65 s with nothing asked: {rounds:.0f} rounds, {cpu:.2f} CPU-seconds, "
      f"{cpu / max(rounds, 1):.2f} per round")
PY
echo "tlsrpt query peak RSS (VmHWM): $(awk '/VmHWM/ {printf "%.0f MB", $2/1024}' /proc/$server/status)"
