#!/usr/bin/env bash
# How long each built-in view takes to answer, as a client of `tlsrpt query` sees it: the
# whole view over the last 30 days of data (date >= the latest date - 29) and over all time,
# answered as an Arrow IPC stream (the compact format; JSON of a million rows would time the
# encoder, not the view), each RUNS times after a first run, which is printed apart (with the
# per-date view cache it computes what the next runs read from memory), medians printed,
# with the answer's size (MB of Arrow IPC) and the median time to its start (the response's
# head, sent with the first rows encoded: the rest of the time is handing the rows over).
# 30 days is asked before all time, so all time's first run finds those 30 dates cached.
# EXTRA_ARGS are added to `tlsrpt query`'s (e.g. `--view-cache-memory off`).
#
# The service computes the views in the background when it starts (`--view-warm-days`, 92 by
# default): the script waits for that to finish and prints how long it took, so *first* is
# the first question after it. WARM=0 starts the service with `--view-warm-days 0`, so that
# *first* computes what it asks about (the figures before warming existed).
#
#   benches/compare/view-latency.sh TABLES_DIR [RUNS]
#
# TABLES_DIR is DATA_DIR/tables (make one with `benches/compare/duckdb-failures.sh generate`).
# Starts `tlsrpt query` from target/release (built unless NO_BUILD=1; BIN_DIR=DIR takes
# another build) on free loopback ports, with the row limit raised to 100,000,000 and no
# memory or time limit (all of a view over years of data holds millions of rows).
# WINDOWS=REGEX keeps the windows whose names match (`30 days`, `all time`); VIEWS=REGEX the
# views whose names match (`policy_overview`).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/compare/common.sh
. benches/compare/common.sh
query_bench_args view-latency.sh 7 "$@"

# shellcheck disable=SC2046 # the optional flag splits into words on purpose
start_query_service "$bin" "$tables" \
  $([ "${WARM:-1}" = 1 ] || echo --view-warm-days 0) ${EXTRA_ARGS:-}
url=$sql_url
echo "machine: $(nproc) CPUs; load before: $(cut -d' ' -f1-3 /proc/loadavg); tables: $tables"
if [ "${WARM:-1}" = 1 ]; then
  # The log line of the first round; the log has no colours when it is not a terminal.
  wait_for_first_warm_round
  echo "computed in the background at start: $(grep 'Views computed ahead of the questions' "$work/log" | sed 's/.*questions\. //')"
  ! grep WARN "$work/log" || echo "(warnings above)"
fi
python3 - "$url" "$runs" "${WINDOWS:-.}" "${VIEWS:-.}" <<'PY'
import http.client, json, re, statistics, sys, time, urllib.parse
url, runs, chosen = urllib.parse.urlsplit(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
chosen_views = sys.argv[4]
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=3600)
def post(sql, accept):
    started = time.perf_counter()
    conn.request("POST", url.path, body=sql.encode(), headers={"Accept": accept})
    response = conn.getresponse()
    # The service answers once the first rows are encoded: the time to here is the answer's
    # start, the rest is handing the rows over.
    headed = time.perf_counter() - started
    body = response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        sys.exit(f"{sql}: HTTP {response.status}: {body[:300]!r}")
    return elapsed, body, headed
_, body, _ = post("SELECT max(date) AS d FROM policies_daily", "application/json")
latest = json.loads(body)[0]["d"]
views = [row["table_name"] for row in json.loads(post(
    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
    "AND table_type = 'VIEW' ORDER BY 1", "application/json")[1])]
print(f"latest date {latest}; {runs} runs each after a first one (timed apart: it fills the "
      "per-date view cache unless --view-cache-memory off); medians")
print(f"{'view':32} {'window':9} {'rows':>9} {'first ms':>9} {'median ms':>10} {'min ms':>8} "
      f"{'MB':>6} {'start ms':>9}")
for view in views:
    if not re.search(chosen_views, view):
        continue
    windows = [("all time", f"SELECT * FROM {view}")]
    if view != "policy_overview":
        windows.insert(0, ("30 days", f"SELECT * FROM {view} WHERE date >= DATE '{latest}' - INTERVAL '29 days'"))
    for name, sql in windows:
        if not re.search(chosen, name):
            continue
        first, body, _ = post(sql, "application/vnd.apache.arrow.stream")
        # (elapsed, headed) of each run; the bodies are not kept (all time of the largest
        # view is 662 MB each).
        timed = [post(sql, "application/vnd.apache.arrow.stream")[::2] for _ in range(runs)]
        times = [elapsed * 1000 for elapsed, _ in timed]
        started = statistics.median([headed for _, headed in timed]) * 1000
        rows = json.loads(post(f"SELECT count(*) AS n FROM ({sql})", "application/json")[1])[0]["n"]
        print(f"{view:32} {name:9} {rows:>9} {first * 1000:>9.1f} {statistics.median(times):>10.1f} "
              f"{min(times):>8.1f} {len(body) / 1e6:>6.1f} {started:>9.1f}")
PY
echo "tlsrpt query peak RSS (VmHWM): $(awk '/VmHWM/ {printf "%.0f MB", $2/1024}' /proc/$server/status)"
